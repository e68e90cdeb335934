"""The verdict calibrated on normal images only (:mod:`samllava.coarse.verdict`), measured.

:func:`verdict_table` runs the coarse stage on labelled data with K support images per seed and
reports, per data set and K: the image AUROC of the score, the accuracy of the calibrated verdict,
the best accuracy any threshold on the score reaches on these very labels (the *oracle*, an upper
bound no rule from normal images can be expected to meet), the false-positive rate achieved beside
the target and the true-positive rate. Nothing here is tuned on these labels: the verdict's
thresholds come from the support images alone.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from samllava.core.config import Profile
from samllava.data import CategoryData, support_images
from samllava.evaluate.harness import CoarseMethod
from samllava.metrics import oracle_accuracy


@torch.no_grad()
def verdict_rows(profile: Profile, data: dict[str, CategoryData], shots: int, seeds: tuple[int, ...],
                 coarse: CoarseMethod | None = None, image_size: int | None = None,
                 device: str | torch.device | None = None) -> list[dict]:
    """One row per (category, seed): AUROC, verdict accuracy, oracle accuracy, FPR, TPR, thresholds."""
    coarse = coarse or CoarseMethod(profile, device=device)
    size = image_size or profile.data.image_size
    rows = []
    for name, cat in data.items():
        images = cat.load_images(cat.test, size)
        labels = np.array([s.label for s in cat.test])
        for seed in seeds:
            support, calibration = support_images(cat, shots, seed, size, profile.fewshot)
            scores, flags = [], []
            for i in range(0, len(images), 16):
                coarse(images[i:i + 16], name, support, calibration)
                scores.append(coarse.last_output.score)
                flags.append(coarse.last_output.defective)
            score, flag = torch.cat(scores).double().cpu().numpy(), torch.cat(flags).cpu().numpy()
            verdict = coarse.last_output.verdict
            rows.append({"category": name, "K": shots, "seed": seed, "n": len(labels),
                         "image_auroc": 100 * roc_auc_score(labels, score),
                         "verdict_accuracy": 100 * (flag == labels).mean(),
                         "oracle_accuracy": 100 * oracle_accuracy(score, labels),
                         "fpr": 100 * flag[labels == 0].mean(), "tpr": 100 * flag[labels == 1].mean(),
                         "target_fpr": 100 * verdict.target_fpr, "rule": verdict.rule})
    return rows


def verdict_table(profile: Profile, datasets: dict[str, dict[str, CategoryData]], shots=(1, 2, 4),
                  seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
                  device: str | torch.device | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per data set and K, mean over categories and seeds (std over seeds of the category mean); and the
    per-category rows behind it. ``device``: where the coarse stage runs
    (:func:`samllava.core.device.resolve_device`)."""
    coarse = CoarseMethod(profile, device=device)
    rows = [{"data": ds, **r} for ds, data in datasets.items() for k in shots
            for r in verdict_rows(profile, data, k, tuple(seeds), coarse)]
    per = pd.DataFrame(rows)
    cols = ["image_auroc", "verdict_accuracy", "oracle_accuracy", "fpr", "tpr"]
    by_seed = per.groupby(["data", "K", "seed"], sort=False)[cols].mean()
    table = by_seed.groupby(level=["data", "K"], sort=False).agg(["mean", "std"])
    table.columns = [f"{c}_{s}" if s == "std" else c for c, s in table.columns]
    table = table.reset_index()
    table.insert(2, "target_fpr", per["target_fpr"].iloc[0])
    return table, per
