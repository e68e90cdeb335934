"""MVTec AD and everything else in its layout.

Layout (Bergmann et al., CVPR 2019)::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/<defect | good>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png      (0/255; none for good)

Masks are matched to images by stem (``012.png`` <-> ``012_mask.png``). :func:`scan_category` reads
one category folder in this layout; :func:`load_mvtec` requires masks, :func:`samllava.data.load_folder`
(a user's own data) makes them optional.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from samllava.data.dataset import GOOD, CategoryData, Sample, attach_descriptions, require_dir, sort_samples
from samllava.core.image_files import IMAGE_SUFFIXES
from samllava.data.images import check_mask_matches

MVTEC_CATEGORIES: tuple[str, ...] = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)
MASK_SUFFIX = "_mask"  # ground_truth/<defect>/<stem>_mask.png


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` sorted by name.

    Hidden files (``.DS_Store``, ``._000.png``) are ignored; any other non-image file or a
    sub-folder raises ``ValueError`` rather than being skipped silently.
    """
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            raise ValueError(f"{p}: unexpected sub-folder; expected only image files in {folder}")
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{p}: not an image file (suffix {p.suffix!r}; accepted: {', '.join(IMAGE_SUFFIXES)})")
        out.append(p)
    return out


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def is_category_dir(path: Path) -> bool:
    """A folder in the MVTec layout has ``train/`` and ``test/``."""
    return (path / "train").is_dir() and (path / "test").is_dir()


def category_dirs(root: str | os.PathLike, categories: Iterable[str] | None, what: str) -> dict[str, Path]:
    """``{name: folder}`` of the category folders under ``root`` (all, or the ``categories`` asked for)."""
    root = require_dir(root, f"the root folder of {what} (holding <category>/train and <category>/test)")
    if categories is None:
        for p in _subfolders(root):  # half a category is a broken one, not an unrelated folder to skip
            if (p / "train").is_dir() != (p / "test").is_dir():
                missing = "test" if (p / "train").is_dir() else "train"
                raise FileNotFoundError(f"{p / missing}: category {p.name!r} has no {missing}/ folder")
        found = {p.name: p for p in _subfolders(root) if is_category_dir(p)}
        if not found:
            hint = (
                " (it is itself a category folder: pass its parent, or use load_folder)"
                if is_category_dir(root)
                else ""
            )
            raise FileNotFoundError(f"{root}: no category folders with train/ and test/ found{hint}; expected {what} "
                                    "in the layout <root>/<category>/train/good, <root>/<category>/test/<defect>")
        return found
    if isinstance(categories, str):
        categories = [categories]
    out = {}
    for name in categories:
        folder = root / name
        if not is_category_dir(folder):
            raise FileNotFoundError(
                f"{folder}: category {name!r} not found (expected {folder}/train and {folder}/test)"
            )
        out[name] = folder
    return out


def _mask_index(gt_dir: Path, defect: str, stems: set[str]) -> dict[str, Path]:
    """``{image stem: mask}`` for ``ground_truth/<defect>``; every mask must belong to an image."""
    index: dict[str, Path] = {}
    for mask in list_images(gt_dir):
        if not mask.stem.endswith(MASK_SUFFIX):
            raise ValueError(f"{mask}: mask name must be <image stem>{MASK_SUFFIX}{mask.suffix} (MVTec naming)")
        stem = mask.stem[: -len(MASK_SUFFIX)]
        if stem not in stems:
            raise ValueError(f"{mask}: mask with no image (no test/{defect}/{stem}.* beside it)")
        if stem in index:
            raise ValueError(f"{mask}: a second mask for image stem {stem!r} (first: {index[stem]})")
        index[stem] = mask
    return index


def scan_category(
    folder: str | os.PathLike, category: str | None = None, *, require_masks: bool = True
) -> CategoryData:
    """Read one category folder in the MVTec layout (file names and image headers only).

    Args:
        folder: the category folder (with ``train/good`` and ``test/``).
        category: its name; default the folder name.
        require_masks: True (MVTec AD): ``ground_truth`` must exist. False (own data): without
            ``ground_truth`` the category has image-level labels only (``has_masks`` False).
            With ``ground_truth``, every defect image needs its mask either way.

    Raises:
        FileNotFoundError: missing ``train/good``, ``test`` or (when required) ``ground_truth``.
        ValueError: an empty category, a defect image with no mask, a mask with no image, a mask
            whose size differs from its image's, or a stray non-image file.
    """
    folder = Path(folder)
    category = category or folder.name
    train_dir = require_dir(folder / "train" / GOOD, f"the normal training images of category {category!r}")
    test_dir = require_dir(folder / "test", f"the test images of category {category!r} in test/<defect|good>/")
    gt_root = folder / "ground_truth"
    has_masks = gt_root.is_dir()
    if require_masks and not has_masks:
        raise FileNotFoundError(f"{gt_root}: no ground_truth folder for category {category!r}; MVTec-AD needs masks "
                                "(for image-level labels only, use load_folder)")

    train = [Sample(p, category, "train", 0, GOOD, None) for p in list_images(train_dir)]
    if not train:
        raise ValueError(f"{train_dir}: empty category {category!r}: no normal training images")
    stray = [p for p in sorted(test_dir.iterdir()) if not p.is_dir() and not p.name.startswith(".")]
    if stray:
        raise ValueError(f"{stray[0]}: file directly in test/; test images go in test/<defect|good>/")

    test, defects = _test_samples(test_dir, gt_root if has_masks else None, category)
    if has_masks:
        _check_no_orphan_masks(gt_root, defects)
    if not test:
        raise ValueError(f"{test_dir}: empty category {category!r}: no test images")

    train = sort_samples(train)
    test = sorted(test, key=lambda s: s.image_path.relative_to(folder).as_posix())
    described = attach_descriptions(train + test, folder)
    return CategoryData(category=category, root=folder, train=described[: len(train)], test=described[len(train):],
                        has_masks=has_masks)


def _test_samples(test_dir: Path, gt_root: Path | None, category: str) -> tuple[list[Sample], set[str]]:
    """The test images of ``test/<defect|good>/`` with their masks (``gt_root`` None: no masks), and the
    defect folder names; every defect image needs its mask when there are masks."""
    test: list[Sample] = []
    defects = {d.name: d for d in _subfolders(test_dir)}
    for defect, d in defects.items():
        images = list_images(d)
        if defect == GOOD:
            test += [Sample(p, category, "test", 0, GOOD, None) for p in images]
            continue
        masks: dict[str, Path] = {}
        if gt_root is not None:
            stems = [p.stem for p in images]
            if len(set(stems)) != len(stems):
                raise ValueError(f"{d}: two images share a stem; masks (<stem>{MASK_SUFFIX}.png) would be ambiguous")
            gt_dir = gt_root / defect
            masks = _mask_index(gt_dir, defect, set(stems)) if gt_dir.is_dir() else {}
        for p in images:
            mask = masks.get(p.stem)
            if gt_root is not None and mask is None:
                raise ValueError(
                    f"{p}: defect image with no mask (expected {gt_root / defect / (p.stem + MASK_SUFFIX)}.png)"
                )
            if mask is not None:
                check_mask_matches(p, mask)
            test.append(Sample(p, category, "test", 1, defect, mask))
    return test, set(defects)


def _check_no_orphan_masks(gt_root: Path, defects: set[str]) -> None:
    """Every mask folder of ``ground_truth/`` belongs to a defect folder of ``test/``."""
    for gt_dir in _subfolders(gt_root):
        if gt_dir.name not in defects or gt_dir.name == GOOD:
            files = list_images(gt_dir)
            if files:
                raise ValueError(f"{files[0]}: mask with no image (no test/{gt_dir.name}/ defect folder)")


def load_mvtec(root: str | os.PathLike, categories: Iterable[str] | None = None) -> dict[str, CategoryData]:
    """Load MVTec AD (or any data in its layout with masks) as ``{category: CategoryData}``.

    Args:
        root: the folder holding the category folders (``<root>/bottle/train/good/000.png``).
        categories: names to load; default every category folder found under ``root``.
    """
    dirs = category_dirs(root, categories, "MVTec-AD")
    return {name: scan_category(folder, name, require_masks=True) for name, folder in dirs.items()}
