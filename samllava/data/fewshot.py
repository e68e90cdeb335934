"""Few-shot support sets: K normal training images per category, five seeded runs.

As in the peers (AnomalyGPT, WinCLIP+), indices are drawn into the ``train/good`` list sorted by
file name, so a seed names the same images on every machine. The first ``k`` of one random
permutation are taken, so for one seed the 1-shot set is inside the 2-shot set, inside the 4-shot set.
"""
from __future__ import annotations

import math

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


def sample_calibration(data: CategoryData, k: int, seed: int, n: int, target_fpr: float) -> list[Sample]:
    """Up to ``n`` normal training images of ``data`` that calibrate the verdict of the ``k``-shot support of
    seed ``seed``: the next ``n`` of the same permutation, so never one of the support images.

    Empty when ``n`` is 0 or train/good holds too few beyond the support for a p-value to reach
    ``target_fpr`` (at least 1 / target_fpr - 1 images): the support images then calibrate, left out one
    at a time (:mod:`samllava.coarse.verdict`).
    """
    train = sort_samples(list(data.train))
    extra = np.random.default_rng(seed).permutation(len(train))[k:k + n] if n > 0 else []
    return [train[i] for i in extra] if len(extra) >= math.ceil(1 / target_fpr - 1 - 1e-9) else []


def support_images(data: CategoryData, k: int, seed: int, size: int, fewshot) -> tuple:
    """The ``k``-shot support (k, 3, size, size) of seed ``seed`` and its calibration normals
    (:func:`sample_calibration`, as ``fewshot`` (a :class:`~samllava.core.config.FewShotConfig`) asks; None
    when there are none); (None, None) for ``k`` = 0."""
    if k <= 0:
        return None, None
    extra = sample_calibration(data, k, seed, fewshot.calibration, fewshot.target_fpr)
    return data.load_images(sample_support(data, k, seed), size), (data.load_images(extra, size) if extra else None)
