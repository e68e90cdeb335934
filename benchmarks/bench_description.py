"""Benchmark: does the language model learn to read SASA's tokens? Literal Eq. 8 keys vs mask cells only.

    python benchmarks/bench_description.py [--profile offline] [--steps 60] [--every 20] [--out results/bench_description.json]

For each setting of ``sasa.text_attends_mask`` (False: Eq. 8 attends to all g x g cells; True: to the
cells inside M_fine and a learned "no defect" slot, see :mod:`samllava.sasa`) the profile's model starts
from the cached SAM side (:func:`samllava.pipeline.train_cascade`, frozen here so that only the
description stage differs), trains SASA and LoRA with the trainer's optimiser groups on the synthetic
training set (seed 1) with the answer sentence as target ("Yes, ..." / "No, ..."; descriptions left out
to keep CPU steps short), and every ``--every`` steps scores the 144 held-out images (seed 0, 1-shot):
AUROC of the first-token yes/no log-odds and the accuracy of its sign. The fine mask's own separation
(non-empty or not) is the ceiling any reader of M_fine can reach. CPU, offline profile: ~5 s a step.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from samllava import pipeline  # noqa: E402
from samllava.config import load_profile  # noqa: E402
from samllava.model import build_model  # noqa: E402
from samllava.results import write_json  # noqa: E402
from samllava.train import answer_log_odds, epoch_batches, param_groups, prepare  # noqa: E402


def score(model, examples) -> dict:
    labels = np.concatenate([ex.labels for ex in examples])
    odds = answer_log_odds(model, examples)
    return {"auroc": float(roc_auc_score(labels, odds)), "accuracy": float(((odds > 0) == labels).mean())}


def run(profile, text_attends_mask: bool, steps: int, every: int, log) -> dict:
    profile = profile.replace(**{"sasa.text_attends_mask": text_attends_mask})
    model = build_model(profile)
    _, warm, _ = pipeline.train_cascade(profile, progress=False)
    model.cascade.load_state_dict(pipeline._sam_side(warm), strict=False)
    size = profile.data.image_size
    train_set = prepare(model, pipeline.synthetic(profile, "train"), size, shots=1, progress=False)
    held_out = prepare(model, pipeline.synthetic(profile, "eval"), size, shots=1, progress=False)
    labels = np.concatenate([ex.labels for ex in held_out])
    with torch.no_grad():
        nonempty = np.concatenate([model.fine(ex.enc).mask.flatten(1).any(1).numpy() for ex in held_out])
    model.requires_grad_(False)
    for name, p in model.named_parameters():  # SASA and LoRA learn; the SAM side stays as warmed up
        p.requires_grad_(name.startswith("sasa.") or "lora_" in name)
    opt = torch.optim.Adam(param_groups(model))
    curve = [{"step": 0, **score(model, held_out)}]
    log(f"text_attends_mask={text_attends_mask} step 0 {curve[-1]}")
    step, start = 0, time.perf_counter()
    for epoch in range(10**6):
        for c, idx in epoch_batches(train_set, profile.train.batch_size, profile.train.seed, epoch):
            if step == steps:
                break
            ex, sel = train_set[c], torch.as_tensor(idx)
            enc = ex.enc.select(sel)
            model.train()
            with torch.no_grad():
                fine_out = model.fine(enc)
            tokens = model.align(enc, fine_out)
            answers = [ex.targets[i].split(" This is")[0] for i in idx]  # the answer sentence only
            loss = model.describer.loss(enc.llava_pixels, tokens, [ex.questions[i] for i in idx], answers)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % every == 0 or step == steps:
                curve.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - start, **score(model, held_out)})
                log(f"text_attends_mask={text_attends_mask} step {step} {curve[-1]}")
        if step == steps:
            break
    return {"text_attends_mask": text_attends_mask, "curve": curve,
            "fine_mask_ceiling": {"nonempty_normal": float(nonempty[labels == 0].mean()),
                                  "nonempty_anomalous": float(nonempty[labels == 1].mean()),
                                  "auroc": float(roc_auc_score(labels, nonempty))}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "results" / "bench_description.json"))
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    runs = [run(profile, flag, args.steps, args.every, lambda m: print(m, flush=True)) for flag in (False, True)]
    write_json(args.out, {"profile": profile.name, "weights": profile.weights_label(), "sasa": profile.to_dict()["sasa"], "steps": args.steps,
                          "lr": profile.train.lr, "sasa_lr": profile.train.sasa_lr, "machine": platform.processor() or platform.machine(),
                          "threads": torch.get_num_threads(), "runs": runs})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
