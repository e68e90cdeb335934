"""``samllava diagnose IMAGE``: one image in, mask PNG, overlay PNG and a JSON report out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .data import load_image
from .data.mvtec import list_images
from .results import atomic_path, write_json


def load_support(folder: str | Path, size: int):
    """All images of a folder of normal images as (K, 3, S, S); an empty folder is an error."""
    import torch

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--support {folder}: not a folder of normal images")
    files = list_images(folder)
    if not files:
        raise ValueError(f"--support {folder}: holds no images (png/jpg/bmp/tif)")
    return torch.stack([load_image(f, size) for f in files])


UNTRAINED_NOTE = ("untrained model: SAM side, SASA and LoRA have their initial weights, so the answer and the "
                  "description mean nothing yet; train first (samllava.train) and pass the checkpoint")


def diagnose_images(model, images, category: str | None = None, support=None) -> list:
    """Diagnose images (B, 3, S, S) in [0, 1]: one :class:`samllava.model.Diagnosis` per image.

    The one call behind ``samllava diagnose`` and the try-your-own-image panel
    (:mod:`samllava.try_image`), so both give the same answer for the same image. ``support``
    (K, 3, S, S) normal images select the few-shot path; None the zero-shot path.
    """
    return model.diagnose(images, category, support)


def full_report(diagnosis, profile, checkpoint) -> dict:
    """The report ``samllava diagnose`` writes: the diagnosis, the profile, its weights and the checkpoint
    (with :data:`UNTRAINED_NOTE` when there is none)."""
    report = diagnosis.report()
    report["profile"], report["weights"], report["checkpoint"] = profile.name, profile.weights_label(), checkpoint
    if checkpoint is None:
        report["note"] = UNTRAINED_NOTE
    return report


def write_outputs(diagnosis, image, out_dir: str | Path) -> dict[str, Path]:
    """mask.png (0/255 fine mask), overlay.png (heatmap + mask on the image), report.json."""
    from .viz import overlay

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"mask": out_dir / "mask.png", "overlay": out_dir / "overlay.png", "report": out_dir / "report.json"}
    with atomic_path(paths["mask"]) as tmp:
        Image.fromarray((diagnosis.fine_mask * 255).astype(np.uint8)).save(tmp, format="PNG")
    with atomic_path(paths["overlay"]) as tmp:
        ov = overlay(image, mask=diagnosis.fine_mask, heatmap=diagnosis.heatmap)
        Image.fromarray((ov * 255).astype(np.uint8)).save(tmp, format="PNG")
    write_json(paths["report"], diagnosis.report())
    return paths


def diagnose_cli(args) -> int:
    from .config import load_profile
    from .model import load_model

    profile = load_profile(args.profile)
    size = profile.data.image_size
    image = load_image(args.image, size)
    support = load_support(args.support, size) if args.support else None
    model = load_model(profile, args.checkpoint)
    diagnosis = diagnose_images(model, image[None], args.category, support)[0]
    paths = write_outputs(diagnosis, image, args.out)
    write_json(paths["report"], full_report(diagnosis, profile, args.checkpoint))
    print(f"answer: {diagnosis.answer}\ndescription: {diagnosis.description}\nwritten: {', '.join(str(p) for p in paths.values())}")
    return 0
