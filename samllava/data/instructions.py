"""Instruction records for description training (AnomalyGPT convention, Sec. 3.4-3.5 of the paper).

Each test image becomes a question, a yes/no answer with the defect's position on a 3x3 grid,
and a detailed description (category, defect type, position, relative size, shape, colour). The
description accuracy of Table 5 reads the answer back with :func:`samllava.metrics.parse_yes_no`,
the position with :func:`parse_position`.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from samllava.data.dataset import Sample
from samllava.data.images import read_array

GENERIC_OBJECT = "object"  # the category phrase of the question when the category is not known
QUESTION = "This is a photo of a {category} for anomaly detection. Is there any anomaly in the image?"
ANSWER_NORMAL = "No, there is no anomaly in the image."
ANSWER_ANOMALY = "Yes, there is an anomaly in the image, at the {position} of the image."
ANSWER_ANOMALY_NO_POSITION = "Yes, there is an anomaly in the image."  # image-level data: no mask, no position
_QUESTION_RE = re.compile("^" + re.escape(QUESTION).replace(re.escape("{category}"), "(.+)") + "$")

# The 3x3 grid, row-major; a mask's centre of mass picks the cell.
GRID: tuple[tuple[str, str, str], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
POSITIONS: tuple[str, ...] = tuple(name for row in GRID for name in row)
NO_POSITION = "none"


def question_phrase(question: str) -> str | None:
    """The category phrase a :data:`QUESTION` was asked with, or None for another text."""
    found = _QUESTION_RE.match(question.strip())
    return found.group(1) if found else None


def position_on_grid(mask: Any) -> str:
    """The 3x3 grid cell (``"top left"`` ... ``"center"`` ... ``"bottom right"``) of a mask's centre of mass.

    Args:
        mask: ``(H, W)`` array or tensor; non-zero = defect (a leading axis of size 1 is accepted).

    Returns:
        the cell name, or ``"none"`` for an empty mask.
    """
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    m = m != 0
    if not m.any():
        return NO_POSITION
    row, col = ndimage.center_of_mass(m)
    # Pixel i covers [i, i+1): its centre is at i + 0.5 in units of the image side.
    r = min(int(3 * (row + 0.5) / m.shape[0]), 2)
    c = min(int(3 * (col + 0.5) / m.shape[1]), 2)
    return GRID[r][c]


# Relative size of a defect from its area fraction (upper bounds), as the data's descriptions name it.
SIZE_BINS: tuple[tuple[float, str], ...] = ((0.002, "tiny"), (0.01, "small"), (0.04, "medium"), (float("inf"), "large"))


def size_label(mask: Any) -> str:
    """Relative size of a defect from its area fraction (``SIZE_BINS``): tiny, small, medium or large."""
    frac = float(np.asarray(mask).astype(bool).mean())
    return next(name for bound, name in SIZE_BINS if frac < bound)


def shape_word(mask: Any) -> str:
    """A word for a mask's shape: ``scattered`` (three or more parts), ``elongated`` (the largest part's
    inertia axes differ threefold), ``round`` (within 1.5-fold) or ``irregular``."""
    m = np.asarray(mask).astype(bool)
    labels, n = ndimage.label(m)
    if n >= 3:
        return "scattered"
    if n == 0:
        return "none"
    largest = labels == (np.bincount(labels.ravel())[1:].argmax() + 1)
    ys, xs = np.nonzero(largest)
    if len(ys) < 3:
        return "round"
    eig = np.linalg.eigvalsh(np.cov(np.stack([ys, xs]).astype(np.float64)) + 1e-3 * np.eye(2))
    ratio = float(np.sqrt(eig[1] / eig[0]))
    return "elongated" if ratio >= 3 else "round" if ratio < 1.5 else "irregular"


def describe(subject: str, defect_type: str | None = None, position: str | None = None, size: str | None = None,
             shape: str | None = None, colour: str | None = None) -> str:
    """A detailed description; ``defect_type=None`` (or ``"good"``) describes a normal image.

    Missing attributes (real data sets carry only the defect type) are left out of the text.
    """
    if defect_type in (None, "good"):
        return (f"This is a photo of {subject}. The surface looks uniform and intact: there is no defect "
                "(no crack, hole, stain, scratch or contamination).")
    words = " ".join(w for w in (size, colour) if w and w != NO_POSITION)
    noun = defect_type.replace("_", " ")
    text = f"This is a photo of {subject}. There is {article(words or noun)} {(words + ' ') if words else ''}{noun}"
    if position and position != NO_POSITION:
        text += f" at the {position} of the image"
    text += "."
    if shape:
        text += f" The defect is {article(shape)} {shape}."
    return text


def article(word: str) -> str:
    """"a" or "an" before ``word`` (by its first letter)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _phrase(category: str, category_phrase: str | Mapping[str, str] | None) -> str:
    if category_phrase is None:
        return category.replace("_", " ")
    if isinstance(category_phrase, str):
        return category_phrase
    return category_phrase.get(category, category.replace("_", " "))


def _position(sample: Sample) -> str:
    """Grid position of an anomalous sample: its annotation, else its mask's, else ``"none"``."""
    if "position" in sample.meta:
        return str(sample.meta["position"])
    if sample.mask_path is None:
        return NO_POSITION
    array, _ = read_array(sample.mask_path)
    if array.ndim == 3:
        array = array[..., :3].any(axis=-1)
    return position_on_grid(array)


def instruction_records(
    samples: Sequence[Sample], category_phrase: str | Mapping[str, str] | None = None
) -> list[dict]:
    """AnomalyGPT-style question/answer records plus the detailed description, one per sample.

    Args:
        samples: labelled images (usually ``CategoryData.test``).
        category_phrase: the name put in the question; a string for all samples, a mapping
            ``{category: phrase}``, or None for the category name with ``_`` -> space.

    Returns:
        dicts with ``image`` (path string), ``category``, ``label``, ``defect_type``, ``position``,
        ``question``, ``answer`` (yes/no with position), ``description`` (the sample's own, or
        one built by :func:`describe`) and ``target`` (answer + description: the training text).
    """
    records = []
    for s in samples:
        phrase = _phrase(s.category, category_phrase)
        position = _position(s) if s.label == 1 else NO_POSITION
        if s.label == 0:
            answer = ANSWER_NORMAL
        elif position == NO_POSITION:
            answer = ANSWER_ANOMALY_NO_POSITION
        else:
            answer = ANSWER_ANOMALY.format(position=position)
        description = s.description or describe(
            f"a {phrase}",
            None if s.label == 0 else s.defect_type,
            position,
            s.meta.get("size"),
            s.meta.get("shape"),
            s.meta.get("colour"),
        )
        records.append({
            "image": str(s.image_path), "category": s.category, "label": s.label, "defect_type": s.defect_type,
            "position": position, "question": QUESTION.format(category=phrase), "answer": answer,
            "description": description, "target": f"{answer} {description}",
        })
    return records


_POSITION_RE = re.compile(r"\b(" + "|".join(sorted(POSITIONS, key=len, reverse=True)) + r")\b")


def parse_position(text: str) -> str | None:
    """The first 3x3 grid position named in ``text`` ("top left" is read whole, not as "top"), or None."""
    found = _POSITION_RE.search(text.lower())
    return found.group(1) if found else None

