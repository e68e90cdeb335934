"""Training of the fine segmentation stage alone (Eq. 6; Sec. 3.5, Sec. 4.4).

Only SAM's prompt encoder, mask decoder and the multi-scale parts learn; the image encoder is
frozen, so its embeddings are computed once (``SamCascade.embed``) and reused at every step.
Adam, lr 1e-4, batch 8 as in Sec. 4.4.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from samllava.core.device import CPU, module_device
from samllava.sam.losses import segmentation_loss
from samllava.sam.cascade import SamCascade
from samllava.sam.prompts import resize_pad_mask
from samllava.core.timing import phase


@phase("SAM warm-up")
def train_segmentation(
    cascade: SamCascade,
    embeddings: torch.Tensor,
    coarse_masks: torch.Tensor,
    gt_masks: torch.Tensor,
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Minimise Eq. 6 on fixed examples; returns the loss of every step.

    Args:
        cascade: the model; trained in place (its mode is restored afterwards).
        embeddings: (N, C, h, w) cached SAM image embeddings.
        coarse_masks: (N, H, W) coarse masks (the prompts).
        gt_masks: (N, H, W) ground-truth masks at the image size.
        steps: optimiser steps; batches cycle through a seeded permutation of the N examples.
        lr, batch_size, seed: Adam learning rate, examples per step, shuffling seed.
        progress: show a tqdm bar.
    """
    n = embeddings.shape[0]
    if coarse_masks.shape[0] != n or gt_masks.shape[0] != n or gt_masks.ndim != 3:
        raise ValueError(f"need N examples of each: embeddings {tuple(embeddings.shape)}, coarse masks "
                         f"{tuple(coarse_masks.shape)}, gt masks {tuple(gt_masks.shape)} (N, H, W)")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    image_size = tuple(gt_masks.shape[-2:])
    generator = torch.Generator(device=CPU).manual_seed(seed)  # host-side order (CPU indices index any device)
    dev = module_device(cascade)  # the examples may be cached elsewhere (the CPU): each batch moves there
    optimiser = torch.optim.Adam(cascade.trainable_parameters(), lr=lr, foreach=True)  # one kernel per op (CPU: a loop)
    was_training = cascade.training
    cascade.train()
    order = torch.empty(0, dtype=torch.long, device=CPU)
    losses: list[float] = []
    bar = tqdm(range(steps), desc="sam segmentation", disable=not progress)
    try:
        for _ in bar:
            if len(order) < min(batch_size, n):
                order = torch.cat([order, torch.randperm(n, generator=generator, device=CPU)])
            idx, order = order[:batch_size], order[batch_size:]
            out = cascade(embeddings[idx].to(dev), coarse_masks[idx].to(dev), image_size)
            kept = out.kept_branches()
            # The branches live in SAM's padded frame: bring the ground truth there once, at the
            # finest branch side; segmentation_loss downsamples it per branch.
            side = max(x.shape[-1] for x in kept.values())
            gt = resize_pad_mask(gt_masks[idx].to(dev), side)
            loss, _ = segmentation_loss(kept, gt, cascade.ms.branch_weights, cascade.ms.focal_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        cascade.train(was_training)
    return losses
