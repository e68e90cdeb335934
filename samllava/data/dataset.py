"""The records every loader returns: :class:`Sample` (one image) and :class:`CategoryData` (one category).

Loaders only list files and check the layout (cheap: file names and image headers); pixels are read
later by :meth:`CategoryData.load_images` / :meth:`CategoryData.load_masks`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from samllava.data.images import load_image, load_mask

GOOD = "good"  # defect type of normal images (MVTec's folder name)
SPLITS = ("train", "test")
DESCRIPTIONS_FILE = "descriptions.jsonl"  # optional per-category text descriptions (written by synthetic.py)
META_KEYS = ("defect_type", "position", "size", "shape", "colour")  # record fields copied into Sample.meta


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    Attributes:
        image_path: the image file.
        category: category name (folder name, e.g. ``"bottle"``).
        split: ``"train"`` or ``"test"``.
        label: 0 normal, 1 anomalous.
        defect_type: ``"good"`` for normal images, else the defect folder name (``"anomaly"`` for VisA).
        mask_path: ground-truth mask, ``None`` for normal images and image-level-only data.
        description: text description of the image when the data set has one.
        meta: extra annotations; synthetic data: defect_type, position (3x3 grid), size, shape, colour.
    """

    image_path: Path
    category: str
    split: str
    label: int
    defect_type: str
    mask_path: Path | None
    description: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False)  # hash=False: a dict is unhashable

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"{self.image_path}: split must be one of {SPLITS}, got {self.split!r}")
        if self.label not in (0, 1):
            raise ValueError(f"{self.image_path}: label must be 0 (normal) or 1 (anomalous), got {self.label!r}")
        if (self.label == 0) != (self.defect_type == GOOD):
            raise ValueError(f"{self.image_path}: label {self.label} contradicts defect type {self.defect_type!r} "
                             f"(normal images and only they have defect type {GOOD!r})")
        if self.label == 0 and self.mask_path is not None:
            raise ValueError(f"{self.image_path}: a normal image cannot have a mask ({self.mask_path})")


@dataclass
class CategoryData:
    """One category: its normal training images and its test images.

    Attributes:
        category: category name.
        root: the category's folder.
        train: normal training images (``train/good``), sorted by file name: few-shot indices refer to it.
        test: test images, normal and anomalous.
        has_masks: False for image-level-only data (no ``ground_truth``): pixel metrics are then not available.
    """

    category: str
    root: Path
    train: list[Sample]
    test: list[Sample]
    has_masks: bool = True

    def load_images(self, samples: Sequence[Sample], size: int) -> torch.Tensor:
        """Images as a ``(N, 3, size, size)`` float32 tensor in [0, 1], on the CPU (users move them)."""
        if not samples:
            return torch.zeros(0, 3, size, size, device="cpu")
        return torch.stack([load_image(s.image_path, size) for s in samples])

    def load_masks(self, samples: Sequence[Sample], size: int) -> torch.Tensor:
        """Ground truth as a ``(N, 1, size, size)`` float32 tensor in {0, 1} (zeros for normal images).

        Raises ``ValueError`` for an anomalous sample without a mask: all-zero stand-ins would
        silently change pixel metrics. For image-level-only categories (``has_masks`` False) the
        message says that pixel metrics are not available.
        """
        out = torch.zeros(len(samples), 1, size, size, device="cpu")
        for i, s in enumerate(samples):
            if s.label == 0:
                continue
            if s.mask_path is None:
                if not self.has_masks:
                    raise ValueError(
                        f"category {self.category!r} ({self.root}) has image-level labels only "
                        f"(no ground_truth masks): pixel metrics are not available; {s.image_path} has no mask"
                    )
                raise ValueError(f"{s.image_path}: anomalous image without a ground-truth mask")
            out[i] = load_mask(s.mask_path, size, image_path=s.image_path)
        return out


def sort_samples(samples: list[Sample]) -> list[Sample]:
    """Order by file name, then by full path (the order few-shot indices refer to)."""
    return sorted(samples, key=lambda s: (s.image_path.name, str(s.image_path)))


def read_descriptions(category_dir: Path) -> dict[str, dict[str, Any]]:
    """``<category>/descriptions.jsonl`` as ``{relative image path: record}``; empty when absent."""
    path = category_dir / DESCRIPTIONS_FILE
    if not path.is_file():
        return {}
    records: dict[str, dict[str, Any]] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err})") from err
            if "image" not in rec:
                raise ValueError(f"{path}:{lineno}: record has no 'image' field")
            records[Path(rec["image"]).as_posix()] = rec
    return records


def attach_descriptions(samples: list[Sample], category_dir: Path) -> list[Sample]:
    """Fill ``description`` and ``meta`` from ``descriptions.jsonl``; a record must match its image."""
    records = read_descriptions(category_dir)
    if not records:
        return samples
    out, used = [], set()
    for s in samples:
        key = s.image_path.relative_to(category_dir).as_posix()
        rec = records.get(key)
        if rec is None:
            out.append(s)
            continue
        used.add(key)
        if int(rec.get("label", s.label)) != s.label:
            raise ValueError(f"{category_dir / DESCRIPTIONS_FILE}: record for {key} has label {rec['label']} "
                             f"but the image's folder gives label {s.label}")
        meta = {k: rec[k] for k in META_KEYS if k in rec}
        out.append(Sample(s.image_path, s.category, s.split, s.label, s.defect_type, s.mask_path,
                          description=rec.get("description"), meta=meta))
    missing = sorted(set(records) - used)
    if missing:
        raise ValueError(f"{category_dir / DESCRIPTIONS_FILE}: records for images that do not exist: {missing[:5]}")
    return out


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path, or ``FileNotFoundError`` saying what was expected there."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder; expected {what}")
    return path


def balanced_subset(data: dict[str, CategoryData], per_label: int | None) -> dict[str, CategoryData]:
    """The first ``per_label`` normal and first ``per_label`` anomalous test images of each category
    (in file order: deterministic, not chosen by result); None keeps everything.

    The language model's forward pass is the costly part of the description tables on a CPU; a
    balanced subset keeps chance at 50 % while bounding that cost.
    """
    if per_label is None:
        return data
    if per_label < 1:
        raise ValueError(f"per_label must be >= 1 or None, got {per_label}")
    out = {}
    for name, cat in data.items():
        test = [s for s in cat.test if s.label == 0][:per_label] + [s for s in cat.test if s.label == 1][:per_label]
        out[name] = CategoryData(cat.category, cat.root, cat.train, test, cat.has_masks)
    return out
