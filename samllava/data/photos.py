"""Real backgrounds for measuring how the verdict behaves on images no rule was tuned on.

Each background is one category in the MVTec layout with many normal images (``train/good``: the
support sets and the calibration normals; ``test/good``) and as many defective ones, drawn from
photographs that install offline:

* **textures**, random crops anywhere in a photograph, train and test alike (so a normal test image and a
  normal train image are drawn the same way, as on a production line): scikit-image's ``brick``,
  ``grass``, ``gravel``, ``moon`` and ``immunohistochemistry`` (a stained tissue section), and the
  packaged simulated textiles (``textile``: disjoint files for train and test);
* **objects**, one photograph captured again and again as a camera on a line would: a small shift,
  rotation and scale, another exposure and sensor noise per image (``coffee``, ``clock``, ``coins``,
  ``camera``, ``chelsea``, ``rocket``);
* ``textile_local``: the packaged textiles with their *own* local defects (image labels only, no masks).

Defects other than textile_local's are painted at low contrast with soft edges
(:func:`samllava.data.realtex.paint_subtle`: cracks, scratches, holes, stains, contamination), on the
object's middle for objects. Deterministic by seed, written atomically (:mod:`samllava.data.writer`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import skimage.data
from PIL import Image

from samllava.data.dataset import GOOD
from samllava.data.drawing import DEFECT_TYPES, DEFECTS, Rendered
from samllava.data.instructions import NO_POSITION, position_on_grid, size_label
from samllava.data.realtex import paint_subtle, textile_files
from samllava.data.writer import Item, prepare_folder, single_threaded, test_items, write_mvtec_layout

PHOTOS_VERSION = 2
TEXTURES: dict[str, str] = {"brick": "a brick wall", "grass": "a lawn of grass", "gravel": "a gravel surface",
                            "moon": "the surface of the moon", "immunohistochemistry": "a stained tissue section",
                            "textile": "a woven textile"}
OBJECTS: dict[str, str] = {"coffee": "a cup of coffee", "clock": "a wall clock", "coins": "a tray of coins",
                           "camera": "a man with a camera", "chelsea": "a cat", "rocket": "a rocket"}
BACKGROUNDS: dict[str, str] = {**TEXTURES, **OBJECTS, "textile_local": "a woven textile"}
# Rules are chosen on the first group and reported on the second (no background in both).
DEV_BACKGROUNDS = ("brick", "grass", "textile", "coffee", "clock")
HELDOUT_BACKGROUNDS = ("gravel", "moon", "immunohistochemistry", "coins", "camera", "chelsea", "rocket",
                       "textile_local")
LOCAL_DEFECT = "local"  # textile_local's defect folder


def _photo(name: str) -> np.ndarray:
    """A scikit-image photograph as float RGB (H, W, 3) in [0, 1]."""
    img = np.asarray(getattr(skimage.data, name)(), np.float32) / 255.0
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(pil, np.float32) / 255


def crop_texture(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop anywhere in the photograph (a third to half of its side, flipped half the time, gain
    +-5 %), as (size, size, 3)."""
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) // 2 + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.clip(_resize(crop, size) * rng.uniform(0.95, 1.05), 0, 1)


def recapture(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """The photograph's centre square as a camera on a line would capture it again: shifted by up to 3 % of
    its side, rotated by up to 3 degrees, scaled by up to 3 %, another gain (+-6 %) and offset (+-3 %), and
    sensor noise (sd 1 %), as (size, size, 3)."""
    h, w = photo.shape[:2]
    side = min(h, w) * rng.uniform(0.97, 1.03) * 0.9
    cy, cx = h / 2 + rng.uniform(-0.03, 0.03) * side, w / 2 + rng.uniform(-0.03, 0.03) * side
    pil = Image.fromarray((photo * 255).astype(np.uint8)).rotate(
        float(rng.uniform(-3, 3)), resample=Image.BICUBIC, center=(cx, cy))
    box = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    img = np.asarray(pil.crop(box).resize((size, size), Image.BICUBIC), np.float32) / 255
    img = img * rng.uniform(0.94, 1.06) + rng.uniform(-0.03, 0.03) + rng.normal(0, 0.01, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def _surfaces(name: str, size: int, n_train: int, n_test: int) -> Callable[[np.random.Generator, str, int], np.ndarray]:
    """``draw(rng, split, index)`` of a background's normal images."""
    if name in ("textile", "textile_local"):
        files = textile_files("nominal")
        if len(files) < n_train + n_test:
            raise ValueError(f"conformal-clip-data holds {len(files)} nominal textiles, fewer than {n_train + n_test}")
        return lambda rng, split, i: _resize(np.asarray(Image.open(files[i if split == "train" else n_train + i])
                                                        .convert("RGB"), np.float32) / 255, size)
    photo = _photo(name)
    if name in OBJECTS:
        return lambda rng, split, i: recapture(photo, rng, size)
    return lambda rng, split, i: crop_texture(photo, rng, size)


def generate_photos(root: str | os.PathLike, categories: Iterable[str] | None = None, n_train: int = 112,
                    n_test: int = 200, size: int = 256, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the backgrounds (default: all of :data:`BACKGROUNDS`) under ``root`` in the MVTec layout.

    Per background ``n_train`` normal train images and ``n_test`` test images, half of them defective
    (painted defects with masks; textile_local: the packaged local defects, without masks).
    """
    names = list(BACKGROUNDS if categories is None else categories)
    unknown = [n for n in names if n not in BACKGROUNDS]
    if unknown:
        raise ValueError(f"unknown background(s) {unknown}; known: {sorted(BACKGROUNDS)}")
    if n_train < 1 or n_test < 2:
        raise ValueError(f"need n_train >= 1 and n_test >= 2, got {n_train}, {n_test}")
    root = Path(root)
    with single_threaded():
        for name in names:
            params = {"generator": "generate_photos", "version": PHOTOS_VERSION, "category": name,
                      "n_train": n_train, "n_test": n_test, "size": size, "seed": seed}
            folder = root / name
            if prepare_folder(folder, params, overwrite):
                items = local_items(n_train, n_test) if name == "textile_local" else \
                    test_items(n_train, n_test, DEFECT_TYPES)
                write_mvtec_layout(folder, items, _drawer(name, size, n_train, n_test), BACKGROUNDS[name], seed,
                                   f"photos/{name}", params)
    return root


def local_items(n_train: int, n_test: int) -> list[Item]:
    """textile_local's items: normal train images, then half the test images the packaged local defects."""
    return ([Item("train", GOOD, i, None, None) for i in range(n_train)]
            + [Item("test", LOCAL_DEFECT, i, LOCAL_DEFECT, None) for i in range(n_test // 2)]
            + [Item("test", GOOD, i, None, None) for i in range(n_test - n_test // 2)])


def _drawer(name: str, size: int, n_train: int, n_test: int):
    """``draw(item, rng)`` for :func:`samllava.data.writer.write_mvtec_layout`."""
    surfaces = _surfaces(name, size, n_train, n_test)
    n_defect = n_test // 2
    margin = 0.3 if name in OBJECTS else 0.15  # objects: defects on the object's middle
    local = textile_files("local") if name == "textile_local" else []

    def draw(item: Item, rng: np.random.Generator) -> Rendered:
        if item.defect == LOCAL_DEFECT:
            image = _resize(np.asarray(Image.open(local[item.index]).convert("RGB"), np.float32) / 255, size)
            return Rendered(image, None, {"defect_type": LOCAL_DEFECT, "position": NO_POSITION, "size": "none",
                                          "shape": "none", "colour": "none"})
        # test images: the defective ones first (by rank over the cycled types), then the normal ones
        index = item.index if item.split == "train" else n_defect + item.index if item.defect is None else \
            item.index * len(DEFECT_TYPES) + DEFECT_TYPES.index(item.defect)
        surface = surfaces(rng, item.split, index)
        if item.defect is None:
            return Rendered(surface, np.zeros((size, size), bool), {"defect_type": "good", "position": NO_POSITION,
                                                                    "size": "none", "shape": "none", "colour": "none"})
        centre = rng.uniform(margin * size, (1 - margin) * size, 2).astype(np.float32)
        mask, shape_word = DEFECTS[item.defect](rng, centre, size, size, size / 256.0, item.size_class)
        image, colour = paint_subtle(rng, surface, mask, item.defect)
        return Rendered(image, mask, {"defect_type": item.defect, "position": position_on_grid(mask),
                                      "size": size_label(mask), "shape": shape_word, "colour": colour})
    return draw
