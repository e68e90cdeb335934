"""VisA (Zou et al., ECCV 2022) through its official one-class split ``split_csv/1cls.csv``.

Layout::

    <root>/split_csv/1cls.csv                             header: object,split,label,image,mask
    <root>/<category>/Data/Images/Normal/0000.JPG          normal images, 4-digit names
    <root>/<category>/Data/Images/Anomaly/000.JPG
    <root>/<category>/Data/Masks/Anomaly/000.png           several defect ids per mask (binarised on load)

The split file defines the benchmark: ``train`` rows (normal only) give ``train/good``, ``test``
rows the test set. Paths in it are relative to ``root``.

``samllava fetch-data visa`` writes the same split in the MVTec layout instead (``<category>/train/good``,
``test/good``, ``test/anomaly``, ``ground_truth/anomaly/<stem>_mask.png``) with a marker file,
:data:`LAID_OUT_MARKER`, saying so; :func:`load_visa` reads that folder as well.
"""
from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from samllava.data.dataset import GOOD, CategoryData, Sample, require_dir, sort_samples
from samllava.core.image_files import IMAGE_SUFFIXES
from samllava.data.images import check_mask_matches
from samllava.data.mvtec import category_dirs, scan_category

VISA_CATEGORIES: tuple[str, ...] = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
    "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
)
SPLIT_FILE = Path("split_csv") / "1cls.csv"
SPLIT_HEADER = ("object", "split", "label", "image", "mask")
ANOMALY = "anomaly"  # VisA's label; also the defect type of its anomalous samples (the split gives no finer type)
MASK_DIR = Path("Data") / "Masks" / "Anomaly"
# Written by `samllava fetch-data` at the root of a data set it laid out: {"dataset": ..., "layout": "mvtec", ...}
LAID_OUT_MARKER = ".samllava-data.json"


def laid_out_as_mvtec(root: Path) -> bool:
    """True for a VisA folder that ``samllava fetch-data visa`` wrote in the MVTec layout."""
    marker = root / LAID_OUT_MARKER
    if not marker.is_file():
        return False
    info = json.loads(marker.read_text())
    return info.get("dataset") == "visa" and info.get("layout") == "mvtec"


def read_split(path: Path) -> dict[str, list[tuple[int, dict[str, str]]]]:
    """Rows of the split file grouped by object: ``{category: [(line number, row), ...]}``."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = tuple(h.strip() for h in next(reader, ()))
        if header != SPLIT_HEADER:
            raise ValueError(f"{path}: header is {','.join(header)!r}; expected {','.join(SPLIT_HEADER)!r}")
        rows: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
        for lineno, values in enumerate(reader, 2):
            if not values:
                continue
            if len(values) != len(SPLIT_HEADER):
                raise ValueError(f"{path}:{lineno}: {len(values)} fields; "
                                 f"expected {len(SPLIT_HEADER)} ({','.join(SPLIT_HEADER)})")
            row = dict(zip(SPLIT_HEADER, (v.strip() for v in values)))
            rows[row["object"]].append((lineno, row))
    return rows


def _sample(root: Path, where: str, category: str, row: dict[str, str]) -> Sample:
    """One split-file row as a Sample, with every file checked."""
    split, label = row["split"], row["label"]
    if split not in ("train", "test"):
        raise ValueError(f"{where}: split {split!r}; expected 'train' or 'test'")
    if label not in ("normal", ANOMALY):
        raise ValueError(f"{where}: label {label!r}; expected 'normal' or '{ANOMALY}'")
    image = root / row["image"]
    if not image.is_file():
        raise FileNotFoundError(f"{where}: image {image} not found")
    if image.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{where}: {image} is not an image file")
    if label == "normal":
        if row["mask"]:
            raise ValueError(f"{where}: normal image {image} has a mask {row['mask']!r}")
        return Sample(image, category, split, 0, GOOD, None)
    if split == "train":
        raise ValueError(f"{where}: anomalous image {image} in the train split (train/good must be normal)")
    if not row["mask"]:
        raise ValueError(f"{where}: defect image {image} with no mask")
    mask = root / row["mask"]
    if not mask.is_file():
        raise FileNotFoundError(f"{where}: mask {mask} of defect image {image} not found")
    check_mask_matches(image, mask)
    return Sample(image, category, split, 1, ANOMALY, mask)


def load_visa(root: str | os.PathLike, categories: Iterable[str] | None = None) -> dict[str, CategoryData]:
    """Load VisA as ``{category: CategoryData}`` from ``split_csv/1cls.csv``.

    Args:
        root: the VisA folder (holding ``split_csv/`` and the category folders), or the folder that
            ``samllava fetch-data visa`` wrote (MVTec layout, :data:`LAID_OUT_MARKER`).
        categories: names to load; default every object in the split file.

    Raises:
        FileNotFoundError: wrong root (no split file), a missing category folder, image or mask.
        ValueError: a malformed split file, an empty category, a defect image with no mask, a mask
            with no image, a mask whose size differs from its image's.
    """
    root = require_dir(root, "the VisA root (holding split_csv/1cls.csv and the category folders)")
    split_path = root / SPLIT_FILE
    if not split_path.is_file() and laid_out_as_mvtec(root):
        dirs = category_dirs(root, categories, "VisA laid out by samllava fetch-data")
        return {name: scan_category(folder, name, require_masks=True) for name, folder in dirs.items()}
    if not split_path.is_file():
        raise FileNotFoundError(f"{split_path}: VisA split file not found; {root} is not a VisA root "
                                "(expected split_csv/1cls.csv beside the category folders, or a folder written "
                                "by `samllava fetch-data visa`)")
    rows = read_split(split_path)
    names = sorted(rows) if categories is None else ([categories] if isinstance(categories, str) else list(categories))
    out = {}
    for name in names:
        folder = require_dir(root / name, f"the VisA category {name!r}")
        if not rows.get(name):
            raise ValueError(f"{split_path}: empty category {name!r}: no rows (objects in the file: {sorted(rows)})")
        samples = [_sample(root, f"{split_path}:{lineno}", name, row) for lineno, row in rows[name]]
        train = sort_samples([s for s in samples if s.split == "train"])
        test = sorted(
            (s for s in samples if s.split == "test"), key=lambda s: s.image_path.relative_to(root).as_posix()
        )
        if not train:
            raise ValueError(f"{split_path}: empty category {name!r}: no train (normal) rows")
        if not test:
            raise ValueError(f"{split_path}: empty category {name!r}: no test rows")
        _check_orphan_masks(folder, {s.mask_path.resolve() for s in test if s.mask_path is not None})
        out[name] = CategoryData(category=name, root=folder, train=train, test=test, has_masks=True)
    return out


def _check_orphan_masks(folder: Path, used: set[Path]) -> None:
    """A mask in ``Data/Masks/Anomaly`` that no split row uses is a mask with no image."""
    mask_dir = folder / MASK_DIR
    if not mask_dir.is_dir():
        return
    for mask in sorted(mask_dir.iterdir()):
        if mask.is_file() and not mask.name.startswith(".") and mask.resolve() not in used:
            raise ValueError(f"{mask}: mask with no image (no row of split_csv/1cls.csv uses it)")
