"""Writing generated data sets in the MVTec layout, atomically and reproducibly.

Shared by the synthetic generator (:mod:`samllava.data.synthetic`) and the real-texture
development set (:mod:`samllava.data.realtex`). Image ``<split>/<folder>/NNN`` is drawn from
:func:`image_rng`, so equal arguments write equal bytes. A category folder is written to a
temporary folder and renamed into place with a ``generator.json`` recording the arguments: a
second call with the same arguments reuses it, one with other arguments needs ``overwrite``.
"""
from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from samllava.data.dataset import DESCRIPTIONS_FILE, GOOD
from samllava.data.drawing import DEFECT_SIZE_CLASSES, Rendered
from samllava.data.instructions import describe
from samllava.data.mvtec import MASK_SUFFIX

GENERATOR_FILE = "generator.json"
PNG_LEVEL = 1  # zlib level: noisy textures compress poorly anyway, level 1 is several times faster


class Item(NamedTuple):
    """One image to draw."""

    split: str  # "train" | "test"
    folder: str  # "good" or the defect folder name
    index: int  # number within its folder
    defect: str | None  # drawn defect type
    size_class: str | None


def image_rng(seed: int, name: str, where: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of folder ``where`` (e.g. ``"test/crack"``) of category ``name``."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(where.encode()), index])


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def single_threaded() -> threadpool_limits:
    """BLAS on one thread: the matrices here are tiny, and threads only contend (10x slower on a busy machine)."""
    return threadpool_limits(1, user_api="blas")


def prepare_folder(folder: Path, params: dict, overwrite: bool) -> bool:
    """True when ``folder`` must be (re)written; False when it holds output of the same arguments."""
    marker = folder / GENERATOR_FILE
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        if folder.exists():
            folder.rmdir()
        return True
    ours = marker.is_file()
    if ours and json.loads(marker.read_text()) == params and not overwrite:
        return False
    if not ours:
        raise FileExistsError(f"{folder} exists and was not written by this generator (no {GENERATOR_FILE}); "
                              "choose another root or remove it")
    if not overwrite:
        raise FileExistsError(f"{folder} holds data generated with other arguments ({marker}); pass overwrite=True")
    shutil.rmtree(folder)
    return True


def scratch_folder(folder: Path) -> Path:
    """An empty temporary folder beside ``folder`` (renamed onto it by :func:`commit_folder`)."""
    tmp = folder.parent / f".{folder.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_folder(tmp: Path, folder: Path, params: dict) -> None:
    (tmp / GENERATOR_FILE).write_text(json.dumps(params, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder)


def test_items(n_train: int, n_test: int, defects: Sequence[str]) -> list[Item]:
    """``n_train`` normal train images, then ``n_test`` test images of which ``n_test // 2`` are defective.

    Defect types are cycled, and each type's size classes from a staggered start, so that even a
    short test set holds micro-scratches and large stains.
    """
    items = [Item("train", GOOD, i, None, None) for i in range(n_train)]
    counters: dict[str, int] = {}
    n = len(defects)
    for j in range(n_test // 2):
        defect = defects[j % n]
        classes = DEFECT_SIZE_CLASSES[defect]
        items.append(Item("test", defect, counters.get(defect, 0), defect, classes[(j // n + j % n) % len(classes)]))
        counters[defect] = counters.get(defect, 0) + 1
    return items + [Item("test", GOOD, i, None, None) for i in range(n_test - n_test // 2)]


def write_mvtec_layout(folder: Path, items: list[Item], draw: Callable[[Item, np.random.Generator], Rendered],
                       subject: str, seed: int, key: str, params: dict, grey: bool = False,
                       descriptions: bool = True) -> None:
    """Draw ``items`` into ``folder`` in the MVTec layout (via a temporary folder renamed into place).

    ``draw(item, rng)`` returns the image, its defect mask and attributes; ``subject`` is the noun
    phrase of the descriptions; ``key`` names the category in :func:`image_rng`.
    """
    tmp = scratch_folder(folder)
    records = []
    for item in items:
        out = draw(item, image_rng(seed, key, f"{item.split}/{item.folder}", item.index))
        rel = Path(item.split) / item.folder / f"{item.index:03d}.png"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(to_uint8(out.image))
        (image.convert("L") if grey else image).save(tmp / rel, compress_level=PNG_LEVEL)
        if item.defect is not None and out.mask is not None:  # image-level data (no mask) writes none
            mask_rel = Path("ground_truth") / item.folder / f"{item.index:03d}{MASK_SUFFIX}.png"
            (tmp / mask_rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(out.mask.astype(np.uint8) * 255).save(tmp / mask_rel, compress_level=PNG_LEVEL)
        if item.split == "test":
            a = out.attrs
            records.append({"image": rel.as_posix(), "label": int(item.defect is not None), **a,
                            "description": describe(subject, a["defect_type"], a["position"], a["size"], a["shape"],
                                                    a["colour"])})
    if descriptions:
        (tmp / DESCRIPTIONS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    commit_folder(tmp, folder, params)
