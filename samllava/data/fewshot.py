"""Few-shot support sets: K normal training images per category, five seeded runs.

As in the peers (AnomalyGPT, WinCLIP+), indices are drawn into the ``train/good`` list sorted by
file name, so a seed names the same images on every machine. The first ``k`` of one random
permutation are taken, so for one seed the 1-shot set is inside the 2-shot set, inside the 4-shot set.
"""
from __future__ import annotations

import numpy as np

from samllava.data.dataset import CategoryData, Sample, sort_samples

FEWSHOT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
FEWSHOT_SHOTS: tuple[int, ...] = (1, 2, 4)


def support_indices(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` distinct indices into a sorted list of ``n`` items: the first ``k`` of
    ``numpy.random.default_rng(seed).permutation(n)``."""
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} support images asked for but only {n} available")
    return np.random.default_rng(seed).permutation(n)[:k]


def sample_support(data: CategoryData, k: int, seed: int) -> list[Sample]:
    """``k`` normal training images of ``data`` for few-shot seed ``seed``.

    Returns them in draw order (``sample_support(d, 4, s)[:2] == sample_support(d, 2, s)``).
    Raises ``ValueError`` when the category has no training images or fewer than ``k``.
    """
    train = sort_samples(list(data.train))  # sorted defensively: indices must mean file-name order
    if not train:
        raise ValueError(f"category {data.category!r} ({data.root}) has no normal training images for a support set")
    if k > len(train):
        raise ValueError(f"category {data.category!r} ({data.root}): k={k} support images asked for "
                         f"but train/good holds only {len(train)}")
    return [train[i] for i in support_indices(len(train), k, seed)]
