"""Seeded construction of randomly initialised components.

Every builder that may draw random weights (CLIP, SAM, SASA, LoRA, LLaVA's vision tower) seeds the
global torch RNG from ``(seed, component name)`` for the duration of the build and restores it
afterwards. A component is then the same whichever code path builds it and in whatever order:
the cascade trained by :func:`samllava.notebook.tables.train_cascade` has the same frozen SAM encoder
as the one inside :func:`samllava.model.sam_llava.build_model`, so a trained SAM side can be shared.
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


def training_init_seed(seed: int, train_seed: int) -> int:
    """The seed the parts that learn are drawn from (SAM's prompt side and decoder, SASA, LoRA, LLaVA's
    projector): the model's random-init ``seed`` offset by the training seed (``train.seed``).

    Training seed 0 starts from the model ``seed`` builds; seeds 1, 2, ... start from other draws, and
    with their own example order (``train.seed`` also orders the batches) they are the independent
    training runs whose spread the tables report (issue #19). The coarse stage never trains and keeps
    ``seed``, so its maps and the verdict are the same for every training seed. Random stand-ins built
    in the same block as a part that learns (the tiny profile's SAM encoder and language model) are
    drawn anew too; the offline and paper profiles have none.
    """
    return int(seed) + int(train_seed)
