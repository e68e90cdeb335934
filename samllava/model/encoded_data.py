"""A data set encoded once for training and for answering: the frozen part of every image cached.

:func:`prepare` runs the frozen stages (coarse maps, SAM embeddings, CLIP text; :meth:`SamLlava.encode`)
once per image and keeps them with the question, training text, label and defect position of each
image (:func:`samllava.data.instruction_records`): :mod:`samllava.train.end_to_end` reuses them every epoch and
:mod:`samllava.evaluate.answers` answers from them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from samllava.core.batching import BatchSizer
from samllava.data import CategoryData, instruction_records, sample_support
from samllava.core.device import CPU, to_device
from samllava.model.sam_llava import Encoded, SamLlava


@dataclass
class Examples:
    """Training or evaluation examples of one category, with the frozen part already computed."""

    category: str
    enc: Encoded
    gt: torch.Tensor  # (N, S, S) float {0,1}
    questions: list[str]
    targets: list[str]  # answer + description (the training text)
    labels: np.ndarray  # (N,) 0 normal / 1 anomalous
    positions: list[str]  # 3x3 grid position of the defect ("none" for normal images)

    def __len__(self) -> int:
        return len(self.questions)


@torch.no_grad()
def prepare(model: SamLlava, data: dict[str, CategoryData], image_size: int, shots: int = 0, seed: int = 0,
            split: str = "test", batch_size: int = 16, progress: bool = True) -> list[Examples]:
    """Encode every image of ``split`` once (frozen stages), with K support images per category.

    The images are encoded on the model's device, ``batch_size`` at a time (on a GPU: as many as fit,
    :class:`samllava.core.batching.BatchSizer`, or ``gpu.encode_batch``); the cache is kept on the CPU, so a
    whole data set never has to fit beside the model, and users move the batches they take
    (:func:`samllava.core.device.to_device`).
    """
    out = []
    sizer = BatchSizer(model.device, batch_size, model.profile.gpu.encode_batch, model.profile.gpu.memory_fraction)
    for name, cat in tqdm(data.items(), desc=f"encode {split}", disable=not progress):
        samples = cat.test if split == "test" else cat.train
        if not samples:
            raise ValueError(f"category {name!r} at {cat.root}: no {split} images")
        support = cat.load_images(sample_support(cat, shots, seed), image_size) if shots > 0 else None
        model.set_support(support)
        images = cat.load_images(samples, image_size)
        batches = sizer.run(len(images), lambda i, j, x=images, c=name: to_device(model.encode(x[i:j], c), CPU))
        enc = Encoded.cat(batches)
        gt = (
            cat.load_masks(samples, image_size)[:, 0]
            if cat.has_masks
            else torch.zeros(images.shape[0], image_size, image_size, device=CPU)
        )
        recs = instruction_records(samples)
        out.append(Examples(name, enc, gt, [r["question"] for r in recs], [r["target"] for r in recs],
                            np.array([r["label"] for r in recs]), [r["position"] for r in recs]))
    model.set_support(None)
    return out
