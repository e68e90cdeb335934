"""A user's own data in the MVTec layout, and :func:`load_dataset`, which picks the loader by layout.

Own data follows the convention users already know::

    <category>/train/good/*.png
    <category>/test/<good | any defect name>/*.png
    <category>/ground_truth/<defect>/<stem>_mask.png      optional

Without ``ground_truth`` a category has image-level labels only: ``CategoryData.has_masks`` is
False and callers report pixel metrics as not available. With it, every defect image needs a mask.
"""
from __future__ import annotations

import os
from pathlib import Path

from samllava.data.dataset import CategoryData, require_dir
from samllava.data.mvtec import category_dirs, is_category_dir, load_mvtec, scan_category
from samllava.data.visa import SPLIT_FILE, load_visa

DATASET_KINDS = ("auto", "mvtec", "visa", "folder")


def load_folder(root: str | os.PathLike, category: str | None = None) -> dict[str, CategoryData]:
    """Load own data in the MVTec layout as ``{category: CategoryData}``.

    Args:
        root: one category folder (it has ``train/`` and ``test/``) or a folder of such folders.
        category: for a category folder, its name (default the folder name); for a folder of
            categories, the one category to load (default all).
    """
    root = require_dir(root, "a category folder (with train/ and test/) or a folder of category folders")
    if is_category_dir(root):
        name = category or root.name
        return {name: scan_category(root, name, require_masks=False)}
    dirs = category_dirs(root, None if category is None else [category], "own data in the MVTec layout")
    return {name: scan_category(folder, name, require_masks=False) for name, folder in dirs.items()}


def load_dataset(root: str | os.PathLike, kind: str = "auto") -> dict[str, CategoryData]:
    """Load a data set by layout.

    Args:
        root: the data set folder.
        kind: ``"visa"`` (split_csv/1cls.csv), ``"mvtec"`` (masks required), ``"folder"`` (masks
            optional) or ``"auto"``: VisA when ``split_csv/1cls.csv`` exists, else ``"folder"``
            (which reads MVTec AD and the synthetic data sets exactly like ``"mvtec"`` does).
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"kind must be one of {DATASET_KINDS}, got {kind!r}")
    if kind == "auto":
        kind = "visa" if (Path(root) / SPLIT_FILE).is_file() else "folder"
    loaders = {"mvtec": load_mvtec, "visa": load_visa, "folder": load_folder}
    return loaders[kind](root)
