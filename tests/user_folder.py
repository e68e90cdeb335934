"""A user's own folder in the MVTec layout, as a person would bring it: photographs of their own size (not
square, not the model's side), JPEG and PNG mixed, no ground-truth masks. Used by the explorer's tests (in
Python and in the browser) and by diagnose's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = (120, 90)  # width, height: neither square nor any profile's side


def part_photo(seed: int, defect: bool, size: tuple[int, int] = SIZE) -> Image.Image:
    """A textured grey part; with ``defect``, a dark scratch across it."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = 120 + 40 * np.sin(np.linspace(0, 6, w))[None, :] + rng.normal(0, 6, (h, w))
    img = Image.fromarray(np.clip(np.repeat(base[..., None], 3, axis=2), 0, 255).astype(np.uint8))
    if defect:
        x = int(rng.integers(w // 5, w // 2))
        ImageDraw.Draw(img).line([(x, h // 4), (x + w // 3, 3 * h // 4)], fill=(25, 20, 20), width=4)
    return img


def write_user_folder(root: Path, categories: tuple[str, ...] = ("widget", "bracket"), n_train: int = 3) -> Path:
    """``root/<category>/train/good`` (``n_train`` normal photos), ``test/good`` (1) and ``test/scratch`` (2)."""
    for c, category in enumerate(categories):
        for split, kind, n, defect in (("train", "good", n_train, False), ("test", "good", 1, False),
                                       ("test", "scratch", 2, True)):
            folder = root / category / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                suffix = ".jpg" if (i + c) % 2 else ".png"
                part_photo(100 * c + 10 * (split == "test") + i + 3 * defect, defect).save(folder / f"{i:03d}{suffix}")
    return root
