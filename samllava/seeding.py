"""Seeded construction of randomly initialised components.

Every builder that may draw random weights (CLIP, SAM, SASA, LoRA, LLaVA's vision tower) seeds the
global torch RNG from ``(seed, component name)`` for the duration of the build and restores it
afterwards. A component is then the same whichever code path builds it and in whatever order:
the cascade trained by :func:`samllava.pipeline.train_cascade` has the same frozen SAM encoder
as the one inside :func:`samllava.model.build_model`, so a trained SAM side can be shared.
"""
from __future__ import annotations

import zlib
from contextlib import contextmanager
from typing import Iterator

import torch


def component_seed(seed: int, component: str) -> int:
    """A 63-bit seed for ``component`` derived from the run's ``seed`` (stable across processes)."""
    return (int(seed) * 1_000_003 + zlib.crc32(component.encode())) % (2**63)


@contextmanager
def seeded(seed: int, component: str) -> Iterator[None]:
    """Run the block with torch's global RNG seeded for ``component``; the caller's RNG state is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(component_seed(seed, component))
        yield
