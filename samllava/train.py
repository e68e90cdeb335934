"""End-to-end training (Sec. 3.5, Sec. 4.4): Adam on L_total = alpha L_seg + gamma L_gen (Eq. 9).

The frozen work (coarse maps, SAM embeddings, CLIP text) is done once per image by
:func:`prepare` and reused every epoch. :func:`train` is seeded, shows progress bars, writes an
atomic checkpoint after every epoch and resumes from it: an interrupted run ends where an
uninterrupted one ends (same batches, same RNG state, same optimiser state).

Several processes: under ``torchrun`` (``torch.distributed`` initialised), each rank takes every
``world``-th batch and gradients are averaged with ``all_reduce`` before each step, so every rank
holds the same weights; rank 0 writes the checkpoints.
``torchrun --nproc_per_node 2 -m samllava.train --profile tiny --epochs 1 --out DIR`` runs it on CPU
(gloo).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .data import CategoryData, instruction_records, sample_support
from .model import Encoded, SamLlava
from .results import atomic_path

CHECKPOINT = "last.pt"


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
    """Encode every image of ``split`` once (frozen stages), with K support images per category."""
    out = []
    for name, cat in tqdm(data.items(), desc=f"encode {split}", disable=not progress):
        samples = cat.test if split == "test" else cat.train
        if not samples:
            raise ValueError(f"category {name!r} at {cat.root}: no {split} images")
        support = cat.load_images(sample_support(cat, shots, seed), image_size) if shots > 0 else None
        model.set_support(support)
        images = cat.load_images(samples, image_size)
        encs = [model.encode(images[i:i + batch_size], name) for i in range(0, len(images), batch_size)]
        enc = _cat_encoded(encs)
        gt = cat.load_masks(samples, image_size)[:, 0] if cat.has_masks else torch.zeros(images.shape[0], image_size, image_size)
        recs = instruction_records(samples)
        out.append(Examples(name, enc, gt, [r["question"] for r in recs], [r["target"] for r in recs],
                            np.array([r["label"] for r in recs]), [r["position"] for r in recs]))
    model.set_support(None)
    return out


def _cat_encoded(encs: list[Encoded]) -> Encoded:
    from .coarse import CoarseOutput

    cat = (lambda name: None if getattr(encs[0].coarse, name) is None else torch.cat([getattr(e.coarse, name) for e in encs]))
    coarse = CoarseOutput(heatmap=cat("heatmap"), lam=cat("lam"), calibrated=cat("calibrated"), mask=cat("mask"),
                          score=cat("score"), terms=encs[0].coarse.terms, log_map=cat("log_map"))
    return Encoded(torch.cat([e.images for e in encs]), coarse, torch.cat([e.embeddings for e in encs]),
                   torch.cat([e.llava_pixels for e in encs]), encs[0].text_tokens)


def epoch_batches(examples: list[Examples], batch_size: int, seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
    """Seeded batches of one epoch: shuffled within each category (one text per batch), then in order."""
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for c, ex in enumerate(examples):
        idx = rng.permutation(len(ex))
        batches += [(c, idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def save_checkpoint(model: SamLlava, optimizer: torch.optim.Optimizer, epoch: int, history: list[dict], path: Path) -> Path:
    state = {"model": model.trainable_state(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "history": history, "rng": torch.get_rng_state(), "profile": model.profile.name,
             "base": model.describer.base_id}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(model: SamLlava, path: str | Path, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load trained weights (and the optimiser state); clear errors for a file of another model."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a torch file
        raise ValueError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {e})") from None
    if state.get("base") != model.describer.base_id:
        raise ValueError(f"checkpoint {path} was trained on base model {state.get('base')!r}, "
                         f"this model is {model.describer.base_id!r}")
    model.load_trainable_state(state["model"], source=str(path))
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state


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
    rank, world = _world()
    torch.manual_seed(cfg.seed)
    params = model.trainable_parameters()
    optimizer = torch.optim.Adam(param_groups(model), lr=cfg.lr, foreach=True)  # CPU default: a Python loop over tensors
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
        batches = batches[: len(batches) - len(batches) % world] if world > 1 else batches
        mine = batches[rank::world]
        bar = tqdm(mine, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress or rank != 0)
        for c, idx in bar:
            ex = examples[c]
            sel = torch.as_tensor(idx)
            losses = model(ex.enc.select(sel), ex.gt[sel], [ex.questions[i] for i in idx], [ex.targets[i] for i in idx])
            optimizer.zero_grad(set_to_none=False)
            losses.total.backward()
            if world > 1:
                for p in params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
            optimizer.step()
            history.append({"epoch": epoch, "step": len(history), "total": losses.total.item(),
                            "seg": losses.seg.item(), "gen": losses.gen.item()})
            bar.set_postfix(loss=f"{losses.total.item():.3f}")
        if ckpt is not None and rank == 0:
            save_checkpoint(model, optimizer, epoch, history, ckpt)
        if world > 1:
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
    from .sam.train import train_segmentation

    cfg = model.profile.train
    emb = torch.cat([ex.enc.embeddings for ex in examples])
    masks = torch.cat([ex.enc.coarse.mask for ex in examples])
    gt = torch.cat([ex.gt for ex in examples])
    return train_segmentation(model.cascade, emb, masks, gt, steps=cfg.sam_warmup_steps, lr=cfg.sam_warmup_lr,
                              batch_size=cfg.batch_size, seed=cfg.seed, progress=progress)


@torch.no_grad()
def _aligned_batches(model: SamLlava, ex: Examples, batch_size: int, oracle_masks: bool = False):
    """Consecutive batches of one category's examples: (cached frozen part, SASA tokens, questions).
    ``oracle_masks``: the ground-truth mask stands in for M_fine (what a perfect SAM would give)."""
    for i in range(0, len(ex), batch_size):
        sel = torch.arange(i, min(i + batch_size, len(ex)))
        enc = ex.enc.select(sel)
        mask = ex.gt[sel] > 0.5 if oracle_masks else model.fine(enc).mask
        yield enc, model.align_mask(enc, mask), model.grounded_questions([ex.questions[j] for j in sel.tolist()], mask)


def answer(model: SamLlava, examples: list[Examples], batch_size: int = 8, max_new_tokens: int | None = None,
           progress: bool = True, oracle_masks: bool = False) -> list[list[str]]:
    """Generated answers for every example (per category), from the cached frozen part."""
    model.eval()
    return [[text for enc, tokens, questions in _aligned_batches(model, ex, batch_size, oracle_masks)
             for text in model.describer.generate(enc.llava_pixels, tokens, questions, max_new_tokens=max_new_tokens)]
            for ex in tqdm(examples, desc="describe", disable=not progress)]


@torch.no_grad()
def answer_log_odds(model: SamLlava, examples: list[Examples], batch_size: int = 16, oracle_masks: bool = False) -> np.ndarray:
    """First-token yes/no log-odds of every example, concatenated in order (:meth:`Describer.yes_no_log_odds`)."""
    model.eval()
    out = [model.describer.yes_no_log_odds(enc.llava_pixels, tokens, questions)
           for ex in examples for enc, tokens, questions in _aligned_batches(model, ex, batch_size, oracle_masks)]
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def main(argv: list[str] | None = None) -> int:
    """Train on the profile's synthetic data (``torchrun`` for several processes)."""
    from .config import load_profile
    from .data import load_dataset
    from .model import build_model
    from .paths import ensure_synthetic

    p = argparse.ArgumentParser(prog="python -m samllava.train")
    p.add_argument("--profile", default=None)
    p.add_argument("--data", default=None, help="MVTec-layout root (default: the profile's synthetic training set)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    profile = load_profile(args.profile)
    model = build_model(profile)
    data = load_dataset(args.data or ensure_synthetic(profile, seed=1))
    examples = prepare(model, data, profile.data.image_size, shots=args.shots, progress=not args.no_progress)
    history = train(model, examples, epochs=args.epochs, out_dir=args.out, progress=not args.no_progress)
    rank, world = _world()
    if world > 1:
        # report a digest of the weights so callers can check that all ranks agree
        digest = torch.stack([p.detach().double().sum() for p in model.trainable_parameters()]).sum()
        print(f"rank {rank} world {world} steps {len(history)} digest {digest.item():.10e}", flush=True)
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
