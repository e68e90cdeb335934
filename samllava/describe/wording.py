"""What the language model reads about the mask before the question (``sasa.region_text``).

The words come from the mask alone (its size, shape and 3x3 position, named as the data's descriptions
name them), never from the ground truth, so training, evaluation and diagnosis read the same evidence.
"""
from __future__ import annotations

import numpy as np

from samllava.data.instructions import NO_POSITION, position_on_grid, shape_word, size_label

REGION_TEXT = "The segmentation marks a {size} {shape} region at the {position} of the image."
NO_REGION_TEXT = "The segmentation marks no region."


def region_sentence(mask: np.ndarray) -> str:
    """The sentence for a mask (S, S): its size, shape and 3x3 position, or that there is none."""
    position = position_on_grid(mask)
    if position == NO_POSITION:
        return NO_REGION_TEXT
    return REGION_TEXT.format(size=size_label(mask), shape=shape_word(mask), position=position)
