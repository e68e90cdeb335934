"""What ``samllava diagnose IMAGE`` reads and writes: the support folder in, mask PNG, overlay PNG and
JSON report out (the command itself is :func:`samllava.cli.diagnose_cli`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import load_image
from .data.mvtec import list_images
from .results import atomic_path, write_json
from .viz import overlay


def load_support(folder: str | Path, size: int) -> torch.Tensor:
    """All images of a folder of normal images as (K, 3, S, S); an empty folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--support {folder}: not a folder of normal images")
    files = list_images(folder)
    if not files:
        raise ValueError(f"--support {folder}: holds no images (png/jpg/bmp/tif)")
    return torch.stack([load_image(f, size) for f in files])


def write_outputs(diagnosis, image, out_dir: str | Path) -> dict[str, Path]:
    """mask.png (0/255 fine mask), overlay.png (heatmap + mask on the image), report.json."""
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
