"""What ``samllava diagnose IMAGE [IMAGE|FOLDER ...]`` reads and writes (the road itself is
:class:`samllava.diagnose.run.Diagnoser`).

In: image files and folders of images (searched recursively, sorted). Out, under ``--out``:
``<name>/mask.png`` (M_fine, 0/255), ``<name>/overlay.png``
(heatmap and mask on the image), ``<name>/report.json`` per image, and ``summary.csv`` (one row per
image: score, verdict, answer, position, fine-mask pixels). ``<name>`` is the image's stem, made unique
with its parent folders' names where stems repeat. Every file is written atomically; ``summary.csv``
last, so a killed run leaves finished images and no half-written summary.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from samllava.core.batching import BatchSizer
from samllava.core.results import atomic_path, write_json
from samllava.data import load_image
from samllava.data.images import IMAGE_SUFFIXES
from samllava.data.instructions import position_on_grid
from samllava.diagnose.report import report_fields
from samllava.model.sam_llava import Diagnosis, SamLlava
from samllava.report.figures import overlay

SUMMARY = "summary.csv"
SUMMARY_COLUMNS = ("image", "score", "verdict", "answer", "position", "fine_mask_pixels", "description")


def gather_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files from paths that are files or folders (recursive, sorted, hidden files ignored), in the
    order given. A missing path, a folder without images or a non-image file raises, naming it."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise ValueError(f"{p}: a folder without images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{p}: not an image file (expected one of {', '.join(sorted(IMAGE_SUFFIXES))})")
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return list(dict.fromkeys(out))


def output_names(files: list[Path]) -> list[str]:
    """One output folder name per image: its stem, prefixed by as many parent folder names as it takes
    to be unique (``good_000``, ``crack_000``)."""
    depth = 0
    while True:
        names = ["_".join([*f.parent.parts[len(f.parent.parts) - depth:], f.stem]) if depth else f.stem for f in files]
        if len(set(names)) == len(names) or depth > max(len(f.parts) for f in files):
            return names if len(set(names)) == len(names) else [f"{n}_{i}" for i, n in enumerate(names)]
        depth += 1


def check_readable(files: list[Path]) -> None:
    """Open every image's header first, so that a bad file stops the run before any work, naming it."""
    for f in files:
        try:
            with Image.open(f) as im:
                im.verify()
        except Exception as e:  # PIL raises many types for corrupt or unsupported files
            raise ValueError(f"{f}: not a readable image ({type(e).__name__}: {e})") from None


def write_outputs(diagnosis: Diagnosis, image: torch.Tensor, out_dir: str | Path, extra: dict | None = None,
                  run: dict | None = None) -> dict[str, Path]:
    """mask.png (0/255 fine mask), overlay.png (heatmap + mask on the image), report.json (+ ``extra``;
    ``run``: its provenance record, :func:`samllava.core.provenance.provenance`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"mask": out_dir / "mask.png", "overlay": out_dir / "overlay.png", "report": out_dir / "report.json"}
    with atomic_path(paths["mask"]) as tmp:
        Image.fromarray((diagnosis.fine_mask * 255).astype(np.uint8)).save(tmp, format="PNG")
    with atomic_path(paths["overlay"]) as tmp:
        ov = overlay(image, mask=diagnosis.fine_mask, heatmap=diagnosis.heatmap)
        Image.fromarray((ov * 255).astype(np.uint8)).save(tmp, format="PNG")
    write_json(paths["report"], {**report_fields(diagnosis), **(extra or {})}, run=run)
    return paths


def diagnose_files(model: SamLlava, files: list[Path], out_dir: str | Path, *, category: str | None, size: int,
                   batch_size: int = 32, max_new_tokens: int | None = None, extra: dict | None = None,
                   run: dict | None = None, progress: bool = True) -> pd.DataFrame:
    """Diagnose ``files`` in batches with the support already set; write every output and the summary.

    Returns the summary (one row per image, :data:`SUMMARY_COLUMNS`).
    """
    out_dir = Path(out_dir)
    names = output_names(files)
    rows = []
    bar = tqdm(total=len(files), desc="diagnose", unit="image", disable=not progress)
    gpu = model.profile.gpu  # on a GPU: at most batch_size images, as many as fit in free memory

    def batch(i: int, j: int) -> None:
        images = torch.stack([load_image(f, size) for f in files[i:j]])
        for f, name, image, d in zip(files[i:j], names[i:j], images,
                                     model.diagnose_with_support(images, category, max_new_tokens)):
            write_outputs(d, image, out_dir / name, {"image": str(f), **(extra or {})}, run)
            rows.append({"image": str(f), "score": d.score, "verdict": d.verdict, "answer": d.answer,
                         "position": position_on_grid(d.fine_mask), "fine_mask_pixels": int(d.fine_mask.sum()),
                         "description": d.description})
            bar.update(1)

    BatchSizer(model.device, batch_size, gpu.describe_batch, gpu.memory_fraction).run(len(files), batch)
    bar.close()
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    with atomic_path(out_dir / SUMMARY) as tmp:
        summary.to_csv(tmp, index=False)
    return summary


def read_summary(out_dir: str | Path) -> list[dict]:
    """The rows of a run's summary.csv (for tests and notebooks)."""
    return json.loads(pd.read_csv(Path(out_dir) / SUMMARY).to_json(orient="records"))
