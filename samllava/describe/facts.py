"""What a description may say, measured from the image and from the mask the words describe.

Nothing here reads a label: the object is the category the user named (or a neutral word), colours and
brightness come from the pixels, and the defect's position, size and shape from the mask and its
contrast with the surface around it. :mod:`samllava.describe.wording` turns :class:`Facts` into
sentences and checks generated text against them.

No defect type is named ("a small defect"): the mask's shape and contrast say what the region looks like
("an elongated region, darker than its surroundings"), not what caused it: a type rule on shape and contrast
(elongated: scratch or crack; compact and darker: hole; ...) mostly disagreed with the labels on the
development split (docs/decisions.md).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from samllava.data.instructions import (
    GENERIC_OBJECT, NO_POSITION, article, position_on_grid, question_phrase, shape_word, size_label,
)

NEUTRAL_SUBJECT = "the part"  # the object's name when no category is known
TONE_STEP = 0.04  # luminance difference (0-1) between a region and its surroundings that counts as darker/lighter
GREYS = ("black", "dark grey", "grey", "light grey", "white")


@dataclass(frozen=True)
class Facts:
    """The measured facts of one image and its mask (strings as the descriptions say them)."""

    subject: str  # the category phrase, or NEUTRAL_SUBJECT
    surface: str  # colour word of the image outside the region
    position: str = NO_POSITION  # 3x3 cell of the region's centre of mass; "none" without a region
    size: str | None = None  # tiny | small | medium | large
    shape: str | None = None  # elongated | round | irregular | scattered
    tone: str | None = None  # "darker" | "lighter" than the surroundings, or None (no clear difference)
    colour: str | None = None  # the region's colour word when its hue differs from the surface's, else None

    @property
    def defect(self) -> bool:
        return self.position != NO_POSITION


def subject_of(question: str) -> str:
    """The subject a description names for a question: the category phrase the question asks about with
    its article ("a metal nut", "an apple", "coins": a plural takes none), or :data:`NEUTRAL_SUBJECT` when
    the question names no category (the generic object)."""
    phrase = question_phrase(question)
    if phrase is None or phrase == GENERIC_OBJECT:
        return NEUTRAL_SUBJECT
    if phrase.split()[0] in ("a", "an", "the") or is_plural(phrase):
        return phrase
    return f"{article(phrase)} {phrase}"


def is_plural(phrase: str) -> bool:
    """Whether a category phrase reads as an English plural ("coins", "capsules", "pcb boards"): its last
    word ends in "s" but not in "ss", "us" or "is" ("glass", "cactus", "chassis" are singular)."""
    last = phrase.split()[-1].lower()
    return last.endswith("s") and not last.endswith(("ss", "us", "is"))


def colour_word(rgb: np.ndarray) -> str:
    """A colour word for an RGB triple in [0, 1]: one of :data:`GREYS` when unsaturated, else a hue name
    (red, orange, brown, yellow, green, cyan, blue, purple, pink)."""
    h, s, v = colorsys.rgb_to_hsv(*(float(c) for c in np.clip(rgb, 0, 1)))
    if v < 0.15:
        return "black"
    if s < 0.2:
        return GREYS[min(4, int(v * 5))] if v < 0.9 else "white"
    deg = 360 * h
    if deg < 15 or deg >= 345:
        return "red"
    if deg < 45:
        return "brown" if v < 0.6 else "orange"
    if deg < 70:
        return "yellow"
    if deg < 165:
        return "green"
    if deg < 200:
        return "cyan"
    if deg < 260:
        return "blue"
    return "purple" if deg < 300 else "pink"


def _luminance(image: np.ndarray) -> np.ndarray:
    """(H, W) luminance of an (H, W, 3) image."""
    return image @ np.array([0.299, 0.587, 0.114], np.float32)


def measure_facts(image: np.ndarray, mask: np.ndarray, subject: str | None) -> Facts:
    """The facts of one image (H, W, 3) in [0, 1] and the mask (H, W) the words describe (empty: no defect)."""
    mask = np.asarray(mask).astype(bool)
    image = np.asarray(image, np.float32)
    subject = subject or NEUTRAL_SUBJECT
    outside = ~mask if mask.any() and (~mask).any() else np.ones(mask.shape, bool)
    surface_rgb = np.median(image[outside], axis=0)
    surface = colour_word(surface_rgb)
    if not mask.any():
        return Facts(subject, surface)
    ring = ndimage.binary_dilation(mask, iterations=max(2, mask.shape[0] // 64)) & ~mask
    ring = ring if ring.any() else outside
    lum = _luminance(image)
    step = float(lum[mask].mean() - lum[ring].mean())
    tone = "darker" if step < -TONE_STEP else "lighter" if step > TONE_STEP else None
    region = colour_word(image[mask].mean(0))
    colour = region if region not in GREYS and region != colour_word(image[ring].mean(0)) else None
    shape = shape_word(mask)
    return Facts(subject, surface, position_on_grid(mask), size_label(mask), shape, tone, colour)


def measure_batch(images: np.ndarray, masks: np.ndarray, subjects: list[str | None]) -> list[Facts]:
    """:func:`measure_facts` of each image (B, 3, H, W) or (B, H, W, 3) with its mask (B, H, W)."""
    images = np.asarray(images, np.float32)
    if images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    return [measure_facts(i, m, s) for i, m, s in zip(images, np.asarray(masks), subjects)]
