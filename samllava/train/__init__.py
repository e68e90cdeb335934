"""End-to-end training (Sec. 3.5, Sec. 4.4): Adam on L_total = alpha L_seg + gamma L_gen (Eq. 9).

The frozen work (coarse maps, SAM embeddings, CLIP text) is done once per image by
:func:`samllava.examples.prepare` and reused every epoch. :func:`train` is seeded, shows progress bars, writes an
atomic checkpoint after every epoch and resumes from it: an interrupted run ends where an
uninterrupted one ends (same batches, same RNG state, same optimiser state).

Several processes: under ``torchrun`` (``torch.distributed`` initialised), each rank takes every
``world``-th batch and gradients are averaged with ``all_reduce`` before each step, so every rank
holds the same weights; rank 0 writes the checkpoints.
``torchrun --nproc_per_node 2 -m samllava.train --profile tiny --epochs 1 --out DIR`` runs it on CPU
(gloo); ``python -m samllava.train`` is ``samllava train`` (:mod:`samllava.cli`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from ..examples import Examples
from ..model import SamLlava
from ..sam.train import train_segmentation


def epoch_batches(examples: list[Examples], batch_size: int, seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
    """Seeded batches of one epoch: shuffled within each category (one text per batch), then in order."""
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for c, ex in enumerate(examples):
        idx = rng.permutation(len(ex))
        batches += [(c, idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def world() -> tuple[int, int]:
    """(rank, number of processes) of this training process; (0, 1) without ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def param_groups(model: SamLlava) -> list[dict]:
    """Adam's groups: SASA at ``train.sasa_lr`` (when set), every other trainable part at ``train.lr``."""
    cfg = model.profile.train
    sasa = {id(p) for p in model.sasa.parameters()}
    params = model.trainable_parameters()
    groups = [{"params": [p for p in params if id(p) not in sasa], "lr": cfg.lr},
              {"params": [p for p in params if id(p) in sasa], "lr": cfg.lr if cfg.sasa_lr is None else cfg.sasa_lr}]
    return [g for g in groups if g["params"]]


def train(model: SamLlava, examples: list[Examples], *, epochs: int | None = None, out_dir: str | Path | None = None,
          resume: bool = True, progress: bool = True, stop_after_epoch: int | None = None,
          warm_up: bool = True) -> list[dict]:
    """Train the trainable parts; returns the history (one dict per step: epoch, step, losses).

    ``warm_up`` runs the profile's SAM warm-up (:func:`warm_up_sam`) before the first epoch;
    pass False when the SAM side was already warmed up (e.g. loaded from a cached
    :func:`samllava.pipeline.train_cascade`).

    ``stop_after_epoch`` ends the call early (as a killed run would), leaving the checkpoint of
    that epoch: the next call with ``resume`` continues from it.
    """
    cfg = model.profile.train
    epochs = cfg.epochs if epochs is None else epochs
    rank, world_size = world()
    torch.manual_seed(cfg.seed)
    params = model.trainable_parameters()
    # CPU default: a Python loop over tensors
    optimizer = torch.optim.Adam(
        param_groups(model), lr=cfg.lr, foreach=True
    )
    history: list[dict] = []
    start = 0
    ckpt = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    if ckpt is not None and resume and ckpt.is_file():
        state = load_checkpoint(model, ckpt, optimizer)
        start, history = state["epoch"] + 1, list(state["history"])
        torch.set_rng_state(state["rng"])
    if start == 0 and warm_up and cfg.sam_warmup_steps > 0:
        warm_up_sam(model, examples, progress=progress and rank == 0)
    model.train()
    model.coarse.eval()  # frozen stages stay in eval mode
    model.cascade.sam.image_encoder.eval()
    for epoch in range(start, epochs):
        batches = epoch_batches(examples, cfg.batch_size, cfg.seed, epoch)
        batches = batches[: len(batches) - len(batches) % world_size] if world_size > 1 else batches
        mine = batches[rank::world_size]
        bar = tqdm(mine, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress or rank != 0)
        for c, idx in bar:
            ex = examples[c]
            sel = torch.as_tensor(idx)
            losses = model(ex.enc.select(sel), ex.gt[sel], [ex.questions[i] for i in idx], [ex.targets[i] for i in idx])
            optimizer.zero_grad(set_to_none=False)
            losses.total.backward()
            if world_size > 1:
                for p in params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
            optimizer.step()
            history.append({"epoch": epoch, "step": len(history), "total": losses.total.item(),
                            "seg": losses.seg.item(), "gen": losses.gen.item()})
            bar.set_postfix(loss=f"{losses.total.item():.3f}")
        if ckpt is not None and rank == 0:
            save_checkpoint(model, optimizer, epoch, history, ckpt)
        if world_size > 1:
            dist.barrier()
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    model.eval()
    return history


def warm_up_sam(model: SamLlava, examples: list[Examples], progress: bool = True) -> list[float]:
    """``train.sam_warmup_steps`` of Eq. 6 alone on the cached examples (same on every rank).

    Where SAM has random weights, end-to-end training would start from masks that carry nothing
    for SASA to align; the paper starts from a pretrained SAM. This short SAM-side phase stands in
    for that pretraining (0 steps in the paper profile).
    """
    cfg = model.profile.train
    emb = torch.cat([ex.enc.embeddings for ex in examples])
    masks = torch.cat([ex.enc.coarse.mask for ex in examples])
    gt = torch.cat([ex.gt for ex in examples])
    return train_segmentation(model.cascade, emb, masks, gt, steps=cfg.sam_warmup_steps, lr=cfg.sam_warmup_lr,
                              batch_size=cfg.batch_size, seed=cfg.seed, progress=progress)
