"""A data set encoded once for training and for answering: the frozen part of every image cached.

:func:`prepare` runs the frozen stages (coarse maps, SAM embeddings, CLIP text; :meth:`SamLlava.encode`)
once per image and keeps them with the question, training text, label and defect position of each
image (:func:`samllava.data.instruction_records`): :mod:`samllava.train.end_to_end` reuses them every epoch and
:mod:`samllava.evaluate.answers` answers from them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from samllava.core.batching import BatchSizer
from samllava.data import CategoryData, instruction_records, support_images
from samllava.core.device import CPU, to_device
from samllava.describe.facts import Facts
from samllava.describe.wording import description
from samllava.model.sam_llava import Encoded, SamLlava
from samllava.core.timing import phase


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
    defect_types: list[str] = field(default_factory=list)  # the labelled defect type ("good" for normal images)

    def __len__(self) -> int:
        return len(self.questions)


def training_texts(records: list[dict], facts: list[Facts], masks: bool) -> list[str]:
    """What the language model learns to write for each image: the record's yes/no answer (with the true
    position), then the ground truth's facts in sentences (:func:`~samllava.describe.wording.description`),
    the words a description may use. A defective image without a mask (image labels only) gets the answer alone."""
    return [r["answer"] if r["label"] == 1 and not masks else f"{r['answer']} {description(f)}"
            for r, f in zip(records, facts)]


@torch.no_grad()
@phase("encoding")
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
        support, calibration = support_images(cat, shots, seed, image_size, model.profile.fewshot)
        model.set_support(support, calibration)
        images = cat.load_images(samples, image_size)
        batches = sizer.run(len(images), lambda i, j, x=images, c=name: to_device(model.encode(x[i:j], c), CPU))
        enc = Encoded.cat(batches)
        gt = (
            cat.load_masks(samples, image_size)[:, 0]
            if cat.has_masks
            else torch.zeros(images.shape[0], image_size, image_size, device=CPU)
        )
        recs = instruction_records(samples)
        questions = [r["question"] for r in recs]
        out.append(Examples(name, enc, gt, questions, training_texts(recs, model.facts(images, gt, questions),
                                                                     cat.has_masks),
                            np.array([r["label"] for r in recs]), [r["position"] for r in recs],
                            [r["defect_type"] for r in recs]))
    model.set_support(None)
    return out
