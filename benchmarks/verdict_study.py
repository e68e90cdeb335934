"""The verdict's achieved false-positive and true-positive rates on real backgrounds, rule by rule.

For every background of :mod:`samllava.data.photos` (textures, objects captured again and again, the
packaged textiles with painted and with their own defects), K = 1, 2, 4, 8, 16 normal support images
are drawn ``--draws`` times from train/good[:48]; the 100 normal and 100 defective test images are judged
by each rule below, at the profile's target false-positive rate. The calibration normals of the
"calibration set" rule are train/good[48:112] (never in a support). Offline profile (EfficientNet-Lite0
memory; the zero-shot CLIP term is off, so the decision map is s_ctx).

Rules:

* ``gumbel (old)``: up to K = 8 the Gumbel model of the leave-one-out block maxima, from 9 the conformal
  quantile of the leave-one-out scores, both against the test image scored with all K images (the rule
  before this study);
* ``largest left-out``: the conformal quantile of the leave-one-out scores (their largest up to K = 8)
  against the test scored with all K images;
* ``leave-one-out``: the conformal p-value against the support images, each scored with the test image in
  its memory in place of itself (full conformal; :mod:`samllava.coarse.verdict`); below K = 4 it cannot
  reach 20 % and reports its finest level, 1 / (K + 1);
* ``calibration set``: the conformal quantile of 64 normals outside the memory, scored as test images.

Rules are chosen on the development backgrounds (:data:`samllava.data.photos.DEV_BACKGROUNDS`) and
reported on the held-out ones. Writes ``OUT.json`` (every draw) and ``OUT.md`` (tables).

    python benchmarks/verdict_study.py --out results/verdict_study
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from samllava.coarse.stage import build_coarse  # noqa: E402
from samllava.coarse.verdict import block_maxima, conformal_quantile, conformal_rank, gumbel_quantile  # noqa: E402
from samllava.core.config import load_profile  # noqa: E402
from samllava.core.paths import data_dir  # noqa: E402
from samllava.core.provenance import provenance  # noqa: E402
from samllava.core.results import header, write_json, write_text  # noqa: E402
from samllava.data import BACKGROUNDS, generate_photos, load_dataset, load_image  # noqa: E402
from samllava.data.photos import DEV_BACKGROUNDS, HELDOUT_BACKGROUNDS  # noqa: E402

SEED = 300  # the photos' generator seed (no other set uses it)
SUPPORT_POOL, CALIBRATION = 48, 64  # train/good[:48] draws the supports, train/good[48:112] calibrates
RULES = ("gumbel (old)", "largest left-out", "leave-one-out", "calibration set")


def load(paths, size: int) -> torch.Tensor:
    return torch.stack([load_image(p, size) for p in paths])


def features(extractor, images: torch.Tensor, chunk: int = 32) -> list[torch.Tensor]:
    parts = [extractor(images[i:i + chunk]) for i in range(0, len(images), chunk)]
    return [torch.cat(level) for level in zip(*parts)]


def decide(rule: str, k: int, alpha: float, held: torch.Tensor, scores: torch.Tensor,
           with_test: torch.Tensor | None, pool: torch.Tensor) -> torch.Tensor | None:
    """(B,) bool: defective by ``rule`` (see the module docstring); None where the rule does not apply (K = 1)."""
    c = held.flatten(1).amax(1).double()
    n = len(c)
    gumbel = gumbel_quantile(block_maxima(held, 4), 16, alpha)
    if rule == "gumbel (old)":
        return scores > (gumbel if conformal_rank(n, alpha) >= n else conformal_quantile(c, alpha))
    if rule == "largest left-out":
        return scores > conformal_quantile(c, alpha)
    if rule == "calibration set":
        return scores > conformal_quantile(pool, alpha)
    if with_test is None:  # K = 1: nothing to leave out
        return None
    beaten_by = (with_test.double() >= scores[None]).sum(0)
    allowed = max(0, int(np.floor((n + 1) * alpha - 1 + 1e-9)))
    return beaten_by <= allowed


def best_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """The balanced accuracy of the best threshold on these labels (what no calibrated rule can beat)."""
    order = np.argsort(-scores)
    tpr = np.cumsum(labels[order] == 1) / max(1, (labels == 1).sum())
    fpr = np.cumsum(labels[order] == 0) / max(1, (labels == 0).sum())
    return float(max(0.5, np.max((tpr + 1 - fpr) / 2)))


def study_background(name: str, root: Path, coarse, ks, draws: int, alpha: float, size: int) -> dict:
    data = load_dataset(root)[name]
    train = load([s.image_path for s in data.train], size)
    test = load([s.image_path for s in data.test], size)
    labels = np.array([s.label for s in data.test])
    cal = coarse.calibrator
    with torch.no_grad():
        test_maps = features(cal.extractor, test)
        pool = train[SUPPORT_POOL:SUPPORT_POOL + CALIBRATION]
        pool_maps = features(cal.extractor, pool)
        out = {}
        for k in ks:
            for d in range(draws):
                rng = np.random.default_rng([d, k, zlib.crc32(name.encode())])
                idx = torch.from_numpy(np.sort(rng.choice(SUPPORT_POOL, k, replace=False)))
                cal.fit(train[idx])
                scores = cal(test, test_maps).s_ctx.flatten(1).amax(1)
                with_test = None if k == 1 else cal.scores_with(test, test_maps)
                pool_scores = cal(pool, pool_maps).s_ctx.flatten(1).amax(1).double()
                row = {"auroc": float(roc_auc_score(labels, scores.numpy())),
                       "best accuracy": best_accuracy(scores.numpy(), labels)}
                for rule in RULES:
                    flags = decide(rule, k, alpha, cal.held_out_s_ctx, scores.double(), with_test, pool_scores)
                    if flags is not None:
                        flags = flags.numpy()
                        row[rule] = {"fpr": float(flags[labels == 0].mean()),
                                     "tpr": float(flags[labels == 1].mean())}
                out.setdefault(str(k), []).append(row)
    return out


def summary_rows(report: dict, backgrounds, ks, alpha: float) -> list[str]:
    """Markdown rows: per K and rule, mean achieved FPR and TPR over backgrounds and draws, the spread of
    (achieved - target) over background means, the worst background and how many collapse to 0."""
    rows = ["| K | rule | mean FPR | mean TPR | accuracy | FPR - target: min / max over backgrounds | "
            "backgrounds with FPR 0 | backgrounds outside 5-35 % |", "|---|---|---|---|---|---|---|---|"]
    for k in ks:
        best = np.mean([np.mean([r["best accuracy"] for r in report[b][str(k)]]) for b in backgrounds])
        rows.append(f"| {k} | best threshold on the test labels | | | {100 * best:.1f} | | | |")
        for rule in RULES:
            if rule not in report[backgrounds[0]][str(k)][0]:
                continue
            fpr = np.array([np.mean([r[rule]["fpr"] for r in report[b][str(k)]]) for b in backgrounds])
            tpr = np.array([np.nanmean([r[rule]["tpr"] for r in report[b][str(k)]]) for b in backgrounds])
            rows.append(f"| {k} | {rule} | {100 * fpr.mean():.1f} | {100 * tpr.mean():.1f} | "
                        f"{100 * (1 - fpr.mean() + tpr.mean()) / 2:.1f} | {100 * (fpr - alpha).min():+.1f} / "
                        f"{100 * (fpr - alpha).max():+.1f} | {int((fpr == 0).sum())} | "
                        f"{int(((fpr < 0.05) | (fpr > 0.35)).sum())} |")
    return rows


def per_background_rows(report: dict, backgrounds, k: int, rules) -> list[str]:
    rows = ["| background | image AUROC | " + " | ".join(f"{r}: FPR / TPR" for r in rules) + " |",
            "|---|---|" + "---|" * len(rules)]
    for b in backgrounds:
        draws = report[b][str(k)]
        cells = [f"{100 * np.mean([r[rule]['fpr'] for r in draws]):.1f} / "
                 f"{100 * np.nanmean([r[rule]['tpr'] for r in draws]):.1f}" if rule in draws[0] else "n/a"
                 for rule in rules]
        rows.append(f"| {b} | {100 * np.mean([r['auroc'] for r in draws]):.1f} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/verdict_study")
    p.add_argument("--backgrounds", nargs="*", default=list(BACKGROUNDS))
    p.add_argument("--ks", nargs="*", type=int, default=[1, 2, 4, 8, 16])
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    profile = load_profile("offline")
    size, alpha = profile.data.image_size, profile.fewshot.target_fpr
    root = data_dir() / f"photos_s{size}_n{args.n_test}_seed{SEED}"
    generate_photos(root, args.backgrounds, n_train=SUPPORT_POOL + CALIBRATION, n_test=args.n_test, size=size,
                    seed=SEED)
    coarse, _ = build_coarse(profile)
    coarse.eval()
    report, t0 = {}, time.perf_counter()
    for b in args.backgrounds:
        report[b] = study_background(b, root, coarse, args.ks, args.draws, alpha, size)
        print(f"[verdict_study] {b}: {time.perf_counter() - t0:.0f} s", flush=True)
    out = Path(args.out)
    run = provenance(profile=profile, data={"photos": root}, seeds={"support draws": args.draws, "photos": SEED})
    write_json(out.with_suffix(".json"), {"target_fpr": alpha, "ks": args.ks, "draws": args.draws,
                                          "seconds": time.perf_counter() - t0, "backgrounds": report}, run=run)
    lines = [f"# The verdict on real backgrounds: achieved rates at a {alpha:.0%} target (offline profile)", ""]
    for title, group in (("Development backgrounds (rules chosen here)", DEV_BACKGROUNDS),
                         ("Held-out backgrounds (reported)", HELDOUT_BACKGROUNDS)):
        group = [b for b in group if b in report]
        if group:
            lines += [f"## {title}: {', '.join(group)}", "", *summary_rows(report, group, args.ks, alpha), ""]
            k = 4 if 4 in args.ks else args.ks[-1]
            lines += [f"### K = {k}, per background", "", *per_background_rows(report, group, k, RULES), ""]
    head = "".join(f"> **{k}**: {v}\n" for k, v in header(run)) + "\n"
    write_text(out.with_suffix(".md"), head + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
