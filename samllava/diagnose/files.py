"""What ``samllava diagnose IMAGE [IMAGE|FOLDER ...]`` reads and writes (the road itself is
:class:`samllava.diagnose.run.Diagnoser`).

In: image files and folders of images (searched recursively, sorted). Out, under ``--out``:
``<name>/mask.png`` (M_fine, 0/255), ``<name>/overlay.png``
(heatmap and mask on the image), ``<name>/report.json`` per image, and ``summary.csv`` (one row per
image: score, verdict, answer, position, fine-mask pixels). ``<name>`` is the image's stem, made unique
with its parent folders' names where stems repeat. Every file is written atomically; ``summary.csv``
last, so a killed run leaves finished images and no half-written summary.

The model sees every image squashed to its square side S (``profile.data.image_size``); mask.png and
overlay.png come back at the image's own width and height (the mask by nearest neighbour, the heatmap
bilinear, both on the original pixels), and the pixel counts of report.json are the model's, at S x S.
An image whose size or aspect differs from the support images' (:func:`size_warnings`) is judged
against normals that were squashed differently: its report says so under ``warnings``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from samllava.core.batching import BatchSizer
from samllava.core.results import atomic_path, write_json
from samllava.data import load_image
from samllava.core.image_files import check_readable, gather_images, output_names  # noqa: F401 (the CLI's)
from samllava.data.instructions import position_on_grid
from samllava.data.images import image_size, to_rgb
from samllava.diagnose.report import report_fields
from samllava.model.sam_llava import Diagnosis, SamLlava

SUMMARY = "summary.csv"
SUMMARY_COLUMNS = ("image", "score", "verdict", "answer", "position", "fine_mask_pixels", "description")
SIZE_TOLERANCE = 0.1  # relative difference of width or height from the supports' that is warned about
OVERLAY_ALPHA = 0.45  # as samllava.report.figures.overlay: the heatmap and the mask tint over the image
MASK_TINT = (255, 26, 26)  # the fine mask's colour on the overlay (RGB)
# matplotlib's "jet" colour map as (x, value) points per channel (its segment data), so that writing an
# overlay needs no plotting library
_JET = {"r": ((0, .35, .66, .89, 1), (0, 0, 1, 1, .5)), "g": ((0, .125, .375, .64, .91, 1), (0, 0, 1, 1, 0, 0)),
        "b": ((0, .11, .34, .65, 1), (.5, 1, 1, 0, 0))}


def jet(values: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W, 3) uint8 colours of the "jet" map, the map scaled to its own [min, max]."""
    v = values.astype(np.float32)
    v = (v - v.min()) / (float(v.max() - v.min()) + 1e-8)
    return np.stack([np.interp(v, *_JET[c]) * 255 + 0.5 for c in "rgb"], axis=-1).astype(np.uint8)


def full_size(diagnosis: Diagnosis, source: str | Path) -> tuple[Image.Image, Image.Image]:
    """mask.png and overlay.png at the width and height of the image file ``source``: M_fine resized by
    nearest neighbour (0/255, mode L), and the heatmap (bilinear) and the mask tinted over the original
    pixels (RGB). Works in 8 bits through Pillow, so a large photograph costs a few of its own sizes."""
    original = Image.fromarray((to_rgb(source) * 255 + 0.5).astype(np.uint8))  # conversions of load_image
    size = original.size  # (W, H)
    mask = Image.fromarray(diagnosis.fine_mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    heat = Image.fromarray(jet(np.asarray(diagnosis.heatmap))).resize(size, Image.Resampling.BILINEAR)
    shown = Image.blend(original, heat, OVERLAY_ALPHA)
    tinted = Image.blend(shown, Image.new("RGB", size, MASK_TINT), OVERLAY_ALPHA)
    return mask, Image.composite(tinted, shown, mask)


def write_outputs(diagnosis: Diagnosis, source: str | Path, out_dir: str | Path, extra: dict | None = None,
                  run: dict | None = None) -> dict[str, Path]:
    """mask.png (0/255 fine mask) and overlay.png (heatmap + mask on the image), both at the size of the
    image file ``source`` (:func:`full_size`), and report.json (+ ``extra``; ``run``: its provenance record,
    :func:`samllava.core.provenance.provenance`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"mask": out_dir / "mask.png", "overlay": out_dir / "overlay.png", "report": out_dir / "report.json"}
    mask, shown = full_size(diagnosis, source)
    for key, picture in (("mask", mask), ("overlay", shown)):
        with atomic_path(paths[key]) as tmp:
            picture.save(tmp, format="PNG")
    write_json(paths["report"], {**report_fields(diagnosis), **sizes(diagnosis, source), **(extra or {})}, run=run)
    return paths


def sizes(diagnosis: Diagnosis, source: str | Path) -> dict:
    """report.json's sizes: the image's ``[width, height]`` (its outputs' size) and the model's square side
    (the size of the pixel counts)."""
    return {"image_size": list(image_size(source)), "model_image_size": int(diagnosis.fine_mask.shape[-1])}


def differs(size: tuple[int, int], reference: tuple[int, int], tolerance: float = SIZE_TOLERANCE) -> bool:
    """Whether ``(width, height)`` differs from ``reference`` by more than ``tolerance`` in either side."""
    return any(abs(a / b - 1) > tolerance for a, b in zip(size, reference))


def size_warnings(files: list[Path], support: list[Path], tolerance: float = SIZE_TOLERANCE) -> dict[Path, str]:
    """One warning per image whose width or height differs by more than ``tolerance`` from the most common
    size of the support images (read from the files' headers): the model squashes both to its square, so
    the normals it compares with were seen at another scale or aspect."""
    if not support:
        return {}
    sizes = [image_size(f) for f in support]
    reference = max(set(sizes), key=sizes.count)
    out = {}
    for f in files:
        w, h = image_size(f)
        if differs((w, h), reference, tolerance):
            out[f] = (f"{f.name} is {w}x{h} pixels and the support images {reference[0]}x{reference[1]}: both are "
                      "squashed to the model's square, so it compares parts at another scale or aspect")
    return out


def size_summary(warned: dict[Path, str], n_images: int) -> str | None:
    """The one line a run prints about :func:`size_warnings` (None: nothing to say)."""
    if not warned:
        return None
    first = next(iter(warned.values()))
    more = f" (and {len(warned) - 1} more image(s) of other sizes)" if len(warned) > 1 else ""
    return f"warning: {len(warned)} of {n_images} image(s) differ in size or aspect from the support: {first}{more}"


def diagnose_files(model: SamLlava, files: list[Path], out_dir: str | Path, *, category: str | None, size: int,
                   batch_size: int = 32, max_new_tokens: int | None = None, extra: dict | None = None,
                   run: dict | None = None, progress: bool = True,
                   warnings: dict[Path, str] | None = None) -> list[dict]:
    """Diagnose ``files`` in batches with the support already set; write every output and the summary.
    ``warnings``: per file, a line for its report.json (``warnings``, a list, empty when none).

    Returns the summary's rows (a dict per image, keyed by :data:`SUMMARY_COLUMNS`;
    ``pandas.DataFrame(rows)`` gives a table).
    """
    out_dir = Path(out_dir)
    names = output_names(files)
    rows = []
    bar = tqdm(total=len(files), desc="diagnose", unit="image", disable=not progress)
    gpu = model.profile.gpu  # on a GPU: at most batch_size images, as many as fit in free memory

    def batch(i: int, j: int) -> None:
        images = torch.stack([load_image(f, size) for f in files[i:j]])
        for f, name, d in zip(files[i:j], names[i:j], model.diagnose_with_support(images, category, max_new_tokens)):
            notes = [warnings[f]] if warnings and f in warnings else []
            write_outputs(d, f, out_dir / name, {"image": str(f), **(extra or {}), "warnings": notes}, run)
            rows.append({"image": str(f), "score": d.score, "verdict": d.verdict, "answer": d.answer,
                         "position": position_on_grid(d.fine_mask), "fine_mask_pixels": int(d.fine_mask.sum()),
                         "description": d.description})
            bar.update(1)

    BatchSizer(model.device, batch_size, gpu.describe_batch, gpu.memory_fraction).run(len(files), batch)
    bar.close()
    with atomic_path(out_dir / SUMMARY) as tmp, open(tmp, "w", newline="") as f:
        table = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        table.writeheader()
        table.writerows(rows)
    return rows


def read_summary(out_dir: str | Path) -> list[dict]:
    """The rows of a run's summary.csv (for tests and notebooks)."""
    import pandas as pd  # here, not at the top: diagnosing writes the file without pandas

    return json.loads(pd.read_csv(Path(out_dir) / SUMMARY).to_json(orient="records"))
