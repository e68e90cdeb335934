"""End-to-end training (Sec. 3.5, Sec. 4.4): Adam on L_total = alpha L_seg + gamma L_gen (Eq. 9).

The frozen work (coarse maps, SAM embeddings, CLIP text) is done once per image by
:func:`samllava.model.encoded_data.prepare` and reused every epoch. :func:`train` is seeded, shows progress
bars, writes an atomic checkpoint after every epoch and resumes from it: an interrupted run ends where an
uninterrupted one ends (same batches, same RNG state, same optimiser state).

A batch is ``train.batch_size`` images whatever the number of processes or the memory of the device:
under ``torchrun`` each rank takes its share of every batch (images ``rank, rank + world, ...``), the
model is wrapped in DistributedDataParallel over its trainable parts (:func:`samllava.core.distributed.data_parallel`)
and each rank's share may run in micro-batches (on a GPU as many images as fit, or
``gpu.train_micro_batch``; :class:`samllava.core.batching.BatchSizer`) whose gradients accumulate. Each part's
loss is weighted by its share of the batch (L_seg: of the images, L_gen: of the answer tokens, Eq. 10
being a mean over the batch's answer tokens), so the gradient is the one batch's gradient: two processes,
or micro-batches, give the weights of one process up to float rounding (tests/test_train.py). One process
with the batch in one piece computes exactly what it always did. Rank 0 writes the checkpoints.
``torchrun --nproc_per_node 2 -m samllava train --profile tiny --epochs 1 --out DIR`` runs it on CPU
(gloo); ``python -m samllava train`` is ``samllava train`` (:mod:`samllava.cli`).
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from samllava.core.batching import BatchSizer
from samllava.model.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from samllava.core.device import CPU, to_device
from samllava.core.distributed import all_reduce_sum, barrier, data_parallel, world
from samllava.model.encoded_data import Examples
from samllava.model.sam_llava import SamLlava
from samllava.train.fine_stage import train_segmentation
from samllava.core.timing import phase

__all__ = ["epoch_batches", "param_groups", "train", "train_step", "warm_up_sam", "world"]


def epoch_batches(examples: list[Examples], batch_size: int, seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
    """Seeded batches of one epoch: shuffled within each category (one text per batch), then in order."""
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for c, ex in enumerate(examples):
        idx = rng.permutation(len(ex))
        batches += [(c, idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def param_groups(model: SamLlava) -> list[dict]:
    """Adam's groups: SASA at ``train.sasa_lr`` (when set), every other trainable part at ``train.lr``."""
    cfg = model.profile.train
    sasa = {id(p) for p in model.sasa.parameters()}
    params = model.trainable_parameters()
    groups = [{"params": [p for p in params if id(p) not in sasa], "lr": cfg.lr},
              {"params": [p for p in params if id(p) in sasa], "lr": cfg.lr if cfg.sasa_lr is None else cfg.sasa_lr}]
    return [g for g in groups if g["params"]]


@phase("end-to-end training")
def train(model: SamLlava, examples: list[Examples], *, epochs: int | None = None, out_dir: str | Path | None = None,
          resume: bool = True, progress: bool = True, stop_after_epoch: int | None = None,
          warm_up: bool = True, micro_batch: int | None = None) -> list[dict]:
    """Train the trainable parts; returns the history (one dict per step: epoch, step, losses).

    ``warm_up`` runs the profile's SAM warm-up (:func:`warm_up_sam`) before the first epoch;
    pass False when the SAM side was already warmed up (e.g. loaded from a cached
    :func:`samllava.notebook.tables.train_cascade`).

    ``stop_after_epoch`` ends the call early (as a killed run would), leaving the checkpoint of
    that epoch: the next call with ``resume`` continues from it. ``micro_batch``: images per
    forward/backward on a GPU (None: ``gpu.train_micro_batch``, else as many as fit).
    """
    cfg = model.profile.train
    epochs = cfg.epochs if epochs is None else epochs
    rank, world_size = world()
    torch.manual_seed(cfg.seed)
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
    model.describer.set_phrasebook([t for ex in examples for t in ex.targets])  # kept in the checkpoint
    if start == 0 and warm_up and cfg.sam_warmup_steps > 0:
        warm_up_sam(model, examples, progress=progress and rank == 0)
    net = data_parallel(model, model.device) if world_size > 1 else model  # after the warm-up: DDP syncs from rank 0
    gpu = model.profile.gpu
    sizer = BatchSizer(model.device, -(-cfg.batch_size // world_size), micro_batch or gpu.train_micro_batch,
                       gpu.memory_fraction)
    model.train()
    model.coarse.eval()  # frozen stages stay in eval mode
    model.cascade.sam.image_encoder.eval()
    for epoch in range(start, epochs):
        bar = tqdm(epoch_batches(examples, cfg.batch_size, cfg.seed, epoch), desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not progress or rank != 0)
        for c, idx in bar:
            losses = train_step(model, optimizer, examples[c], idx, net=net, sizer=sizer)
            history.append({"epoch": epoch, "step": len(history), **losses})
            bar.set_postfix(loss=f"{losses['total']:.3f}")
        if ckpt is not None and rank == 0:
            save_checkpoint(model, optimizer, epoch, history, ckpt)
        barrier()
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    model.eval()
    return history


def train_step(model: SamLlava, optimizer: torch.optim.Optimizer, ex: Examples, idx: np.ndarray, *,
               net: torch.nn.Module | None = None, sizer: BatchSizer | None = None) -> dict[str, float]:
    """One optimiser step on the images ``idx`` of ``ex`` (the whole batch, on every rank); returns the
    batch's losses (the same on every rank).

    This rank's share (``idx[rank::world]``) runs in micro-batches of ``sizer`` (default: the whole share),
    each weighted by its share of the batch (module docstring). A rank left without images (a batch
    smaller than the world) runs the batch's first image with weight 0, so that it joins the all-reduce.
    A GPU out of memory in one process halves the micro-batch and runs the step again.
    """
    rank, world_size = world()
    net = net if net is not None else model
    sizer = sizer if sizer is not None else BatchSizer(CPU, len(idx))
    share = idx[rank::world_size]
    if len(share) == 0:
        share, weight = idx[:1], 0.0
    else:
        weight = 1.0
    while True:
        size = sizer.size
        try:
            return _accumulate(model, optimizer, ex, idx, share, weight, net, sizer)
        except torch.cuda.OutOfMemoryError:  # nothing was stepped: run the step again with half the micro-batch
            if world_size > 1 or size is None or size <= 1:
                raise
            if sizer.size == size:  # the batch in one piece does not go through the sizer
                sizer.size = size // 2
            torch.cuda.empty_cache()


def _accumulate(model: SamLlava, optimizer, ex: Examples, idx: np.ndarray, share: np.ndarray, weight: float,
                net: torch.nn.Module, sizer: BatchSizer) -> dict[str, float]:
    """Gradients of this rank's ``share`` of the batch ``idx``, micro-batch by micro-batch, then the step."""
    t = model.profile.train
    _, world_size = world()
    optimizer.zero_grad(set_to_none=False)
    whole = world_size == 1 and sizer.size is not None and sizer.size >= len(idx)
    if whole:  # one process, the batch in one piece: exactly the plain step
        losses = net(*_batch(model, ex, idx))
        losses.total.backward()
        optimizer.step()
        return {"total": losses.total.item(), "seg": losses.seg.item(), "gen": losses.gen.item()}
    questions = [ex.questions[i] for i in idx]
    n_sasa = model.sasa.num_tokens(ex.enc.text_tokens.shape[1])
    lengths = dict(zip(idx.tolist(), model.describer.answer_lengths(questions, [ex.targets[i] for i in idx], n_sasa)))
    n_tokens = sum(lengths.values())

    def micro(i: int, j: int) -> torch.Tensor:
        part = share[i:j]
        last = j == len(share)
        w_seg = weight * len(part) / len(idx)
        w_gen = weight * sum(lengths[k] for k in part.tolist()) / n_tokens
        with nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync():  # DDP reduces on the last
            losses = net(*_batch(model, ex, part))
            (world_size * (t.seg_weight * w_seg * losses.seg + t.gen_weight * w_gen * losses.gen)).backward()
        return torch.stack([w_seg * losses.seg.detach(), w_gen * losses.gen.detach()]).double()

    parts = sizer.run(len(share), micro, retry=False)
    optimizer.step()
    seg, gen = all_reduce_sum(torch.stack(parts).sum(0)).tolist()
    return {"total": t.seg_weight * seg + t.gen_weight * gen, "seg": seg, "gen": gen}


def _batch(model: SamLlava, ex: Examples, idx: np.ndarray):
    """The model's inputs for the images ``idx`` of ``ex``, on the model's device."""
    sel = torch.as_tensor(idx, device=CPU)
    dev = model.device
    return (to_device(ex.enc.select(sel), dev), ex.gt[sel].to(dev), [ex.questions[i] for i in idx],
            [ex.targets[i] for i in idx])


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
