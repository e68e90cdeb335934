"""A harder development set: real photographs as surfaces, subtle painted defects, MVTec layout.

Our procedural synthetic defects are easy (a plain k-NN reaches 98-99 % image AUROC on them); real
inspection images are not. This set keeps the masks and descriptions of the synthetic data but
draws every image from a *real* photograph that installs offline:

* ``brick``, ``grass``, ``gravel``: scikit-image's bundled 512 x 512 texture photographs. Normal
  images are random crops (side 144-192 px, random flip, slight gain jitter) resized to ``size``;
  ``train/good`` crops come from the top-left and bottom-right quadrants of the photograph and every
  test crop from the other two, so no test image repeats a support image's pixels while both see the
  photograph's perspective and lighting alike.
* ``textile``: the packaged simulated textile photographs (``conformal-clip-data``, nominal images
  only, 250 px): train and test draw disjoint images.

Defects reuse the synthetic generator's shapes (crack, scratch, hole, stain, contamination, with
their size classes) but are painted at low contrast with soft edges, as real defects look: a crack
darkens the surface under it by 35-60 %, a scratch lightens it by 30-50 %, a stain tints it by 20-40 %,
contamination is a half-transparent coloured speck cluster. The ground-truth mask is the painted shape.

Deterministic by seed, written atomically (:func:`samllava.data.synthetic.generate_synthetic`'s
conventions: ``generator.json``, a temporary folder renamed into place).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage

from samllava.data.drawing import DEFECT_TYPES, DEFECTS, Rendered
from samllava.data.instructions import NO_POSITION, position_on_grid, size_label
from samllava.data.writer import Item, prepare_folder, single_threaded, test_items, write_mvtec_layout

REALTEX_VERSION = 1
REALTEX_CATEGORIES: dict[str, str] = {  # category -> subject phrase of its descriptions
    "brick": "a brick wall",
    "grass": "a lawn of grass",
    "gravel": "a gravel surface",
    "textile": "a woven textile",
}
# Tint of a stain and colours of contamination (RGB multipliers / targets), deliberately muted.
STAIN_TINTS: dict[str, tuple[float, float, float]] = {"brownish": (0.80, 0.70, 0.60), "dark": (0.75, 0.75, 0.75),
                                                      "yellowish": (1.0, 0.95, 0.70)}
SPECK_COLOURS: dict[str, tuple[float, float, float]] = {"dark": (0.15, 0.15, 0.15), "white": (0.95, 0.95, 0.95),
                                                        "rust": (0.60, 0.35, 0.20)}


def _skimage_photo(name: str) -> np.ndarray:
    return getattr(skimage.data, name)().astype(np.float32) / 255.0


def textile_files(kind: str = "nominal") -> list[Path]:
    """The packaged simulated textile photographs: ``"nominal"`` (normal) or ``"local"`` (a local defect each)."""
    import conformal_clip_data  # optional data package: the textiles only

    folder = {"nominal": conformal_clip_data.nominal_dir, "local": conformal_clip_data.local_dir}[kind]()
    return sorted(Path(folder).glob("*.jpg"))


def _crop_surface(photo: np.ndarray, rng: np.random.Generator, size: int, split: str) -> np.ndarray:
    """A random crop of a greyscale photograph (H, W) inside one quadrant of the split, as (size, size, 3) RGB."""
    h, w = photo.shape
    side = int(rng.integers(144, 193))
    quadrants = ((0, 0), (1, 1)) if split == "train" else ((0, 1), (1, 0))
    qy, qx = quadrants[int(rng.integers(2))]
    y = qy * (h // 2) + int(rng.integers(0, h // 2 - side + 1))
    x = qx * (w // 2) + int(rng.integers(0, w // 2 - side + 1))
    crop = photo[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = Image.fromarray((crop * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    img = np.asarray(img, np.float32) / 255
    gain = rng.uniform(0.95, 1.05)
    return np.repeat(np.clip(img * gain, 0, 1)[..., None], 3, axis=2)


def _textile_surface(path: Path, size: int) -> np.ndarray:
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return np.asarray(img, np.float32) / 255


def paint_subtle(rng: np.random.Generator, surface: np.ndarray, mask: np.ndarray, defect: str
                 ) -> tuple[np.ndarray, str]:
    """Paint ``mask`` (H, W) bool onto ``surface`` (H, W, 3) in [0, 1] at low contrast; returns image, colour word."""
    alpha = ndimage.gaussian_filter(mask.astype(np.float32), 0.8 if defect in ("crack", "scratch") else 1.5)
    alpha = np.maximum(alpha, 0.6 * mask)[..., None]  # soft edge, the shape itself always clearly painted
    if defect in ("crack", "hole"):
        strength = rng.uniform(0.35, 0.60) if defect == "crack" else rng.uniform(0.45, 0.70)
        return np.clip(surface * (1 - strength * alpha), 0, 1), "dark"
    if defect == "scratch":
        strength = rng.uniform(0.30, 0.50)
        return np.clip(surface + strength * alpha * (1 - surface), 0, 1), "light"
    if defect == "stain":
        name = list(STAIN_TINTS)[int(rng.integers(len(STAIN_TINTS)))]
        strength = rng.uniform(0.8, 1.6)  # times the tint's distance from 1: a 20-40 % change
        tint = 1 - strength * (1 - np.asarray(STAIN_TINTS[name], np.float32))
        return np.clip(surface * (1 - alpha + alpha * tint), 0, 1), name
    name = list(SPECK_COLOURS)[int(rng.integers(len(SPECK_COLOURS)))]
    strength = rng.uniform(0.5, 0.8)
    colour = np.asarray(SPECK_COLOURS[name], np.float32)
    return np.clip(surface * (1 - strength * alpha) + strength * alpha * colour, 0, 1), name


def _surfaces(category: str, size: int, n_train: int, n_test: int
              ) -> Callable[[np.random.Generator, str, int], np.ndarray]:
    """``draw(rng, split, index)`` of a category's normal surfaces (train and test from disjoint sources)."""
    if category == "textile":
        files = textile_files()
        if len(files) < n_train + n_test:
            raise ValueError(f"conformal-clip-data holds {len(files)} nominal textiles, fewer than {n_train + n_test}")
        return lambda rng, split, i: _textile_surface(files[i if split == "train" else n_train + i], size)
    photo = _skimage_photo(category)
    return lambda rng, split, i: _crop_surface(photo, rng, size, split)


def generate_realtex(root: str | os.PathLike, categories: Iterable[str] | None = None, n_train: int = 8,
                     n_test: int = 24, size: int = 256, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the real-texture development set in the MVTec layout under ``root``; returns ``root``.

    Per category as :func:`samllava.data.generate_synthetic`: ``n_train`` normal train images,
    ``n_test`` test images of which ``n_test // 2`` are defective (types and size classes cycled),
    masks and ``descriptions.jsonl``.
    """
    names = list(REALTEX_CATEGORIES if categories is None else categories)
    unknown = [n for n in names if n not in REALTEX_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown real-texture categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                         f"known: {sorted(REALTEX_CATEGORIES)}")
    if n_train < 1 or n_test < 2:
        raise ValueError(f"need n_train >= 1 and n_test >= 2, got {n_train}, {n_test}")
    root = Path(root)
    with single_threaded():
        for name in names:
            params = {"generator": "generate_realtex", "version": REALTEX_VERSION, "category": name,
                      "n_train": n_train, "n_test": n_test, "size": size, "seed": seed}
            folder = root / name
            if prepare_folder(folder, params, overwrite):
                items = test_items(n_train, n_test, DEFECT_TYPES)
                write_mvtec_layout(folder, items, _drawer(name, size, n_train, n_test), REALTEX_CATEGORIES[name], seed,
                                   f"realtex/{name}", params)
    return root


def _drawer(name: str, size: int, n_train: int, n_test: int):
    """``draw(item, rng)`` for :func:`samllava.data.writer.write_mvtec_layout`: a real surface, perhaps a defect."""
    surfaces = _surfaces(name, size, n_train, n_test)
    n_defect = n_test // 2

    def draw(item: Item, rng: np.random.Generator) -> Rendered:
        # test images: defective ones first (0 .. n_defect - 1), then the normal ones
        index = item.index if item.split == "train" else (
            _defect_rank(item) if item.defect is not None else n_defect + item.index)
        surface = surfaces(rng, item.split, index)
        if item.defect is None:
            return Rendered(surface, np.zeros((size, size), bool), {"defect_type": "good", "position": NO_POSITION,
                                                                    "size": "none", "shape": "none", "colour": "none"})
        centre = rng.uniform(0.15 * size, 0.85 * size, 2).astype(np.float32)
        mask, shape_word = DEFECTS[item.defect](rng, centre, size, size, size / 256.0, item.size_class)
        image, colour = paint_subtle(rng, surface, mask, item.defect)
        return Rendered(image, mask, {"defect_type": item.defect, "position": position_on_grid(mask),
                                      "size": size_label(mask), "shape": shape_word, "colour": colour})
    return draw


def _defect_rank(item: Item) -> int:
    """The position of a defective test image among them (:func:`samllava.data.writer.test_items` cycles the types)."""
    return item.index * len(DEFECT_TYPES) + DEFECT_TYPES.index(item.defect)
