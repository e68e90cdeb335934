"""Evaluation metrics of the paper (Sec. 4.1) and the tables built from them.

* Image-AUC / Pixel-AUC: area under the ROC curve of image scores / of every pixel of a data set.
* AUPRO: area under the per-region-overlap curve up to a false-positive rate of 0.3, divided by
  0.3 (Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021, Sec. 3.3; the MVTec AD
  evaluation code ``compute_pro`` / ``trapezoid``).
* F1-max: the best F1 score over all thresholds.
* Description accuracy (Table 5): the yes/no rule of AnomalyGPT and Myriad: an anomalous image
  is correct when the answer says yes, a normal one when it says no.

Image metrics take 1-D scores and binary labels. Pixel metrics take anomaly maps and binary masks,
either one ``(N, H, W)`` array or a list of ``(H, W)`` arrays (images may differ in size), numpy
or torch. Pixel metrics live in :mod:`.pixel` (one streamed histogram per data set, with a stated
bound on the binning error) and are re-exported here; input checks in :mod:`.inputs`.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from samllava.metrics.inputs import ArrayLike, MapsLike, as_binary, as_numpy, scores_and_labels
from samllava.metrics.pixel import (
    DEFAULT_BINS, DEFAULT_CHUNK, MVTEC_STRUCTURE, PixelHistogram, aupro, aupro_with_bound, pixel_auroc,
    pixel_auroc_with_bound, pixel_f1_max, pixel_histogram,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ArrayLike", "MapsLike", "DEFAULT_BINS", "DEFAULT_CHUNK", "MVTEC_STRUCTURE", "PixelHistogram", "aupro",
    "aupro_with_bound", "pixel_auroc", "pixel_auroc_with_bound", "pixel_f1_max", "pixel_histogram", "image_auroc",
    "f1_max", "parse_yes_no", "description_accuracy", "category_table", "mean_std",
]


# --------------------------------------------------------------------------- image level


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image-AUC: area under the ROC curve, i.e. P(score of an anomalous image > score of a
    normal one) with ties counted 1/2 (exact, ``sklearn.metrics.roc_auc_score``).

    Args:
        scores: ``(N,)`` image anomaly scores, higher = more anomalous.
        labels: ``(N,)`` 1 = anomalous, 0 = normal; both classes must occur.
    """
    s, y = scores_and_labels(scores, labels, metric="AUROC", need_negatives=True)
    from sklearn.metrics import roc_auc_score  # here: a diagnosis never needs scikit-learn (docs/decisions.md)

    return float(roc_auc_score(y, s))


def oracle_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best accuracy of any threshold ``score > t`` chosen on these very labels (the *oracle*: an upper
    bound for a threshold set without them); scores (N,), labels (N,) in {0, 1}; all cuts tried, vectorised."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    # predicting the top i as defective: correct = positives among them + negatives below them
    tp = np.concatenate([[0], np.cumsum(y)])
    tn = (~y).sum() - np.concatenate([[0], np.cumsum(~y)])
    valid = np.concatenate([[True], s[1:] != s[:-1], [True]])  # cut only between distinct scores
    return float(((tp + tn)[valid]).max() / len(y))


def f1_max(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image F1-max: ``max_t 2 P(t) R(t) / (P(t) + R(t))`` over every threshold of
    ``sklearn.metrics.precision_recall_curve``. Shapes as in :func:`image_auroc`; needs at
    least one anomalous image."""
    s, y = scores_and_labels(scores, labels, metric="F1", need_negatives=False)
    from sklearn.metrics import precision_recall_curve  # here, as in image_auroc

    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


# --------------------------------------------------------------------------- descriptions

# Leading markup/punctuation, an optional "Answer:", then a whole word yes/no ("Yesterday",
# "Nope", "Not" are neither).
_YES_NO = re.compile(r"^[\W_]*(?:answer\s*:)?[\W_]*(yes|no)\b", re.IGNORECASE)


def parse_yes_no(answer: str) -> bool | None:
    """Read an answer back by Table 5's rule: True when it starts with "yes", False when it starts
    with "no", None for anything else (counted as wrong by :func:`description_accuracy`).

    Only the leading word decides, as the answers are trained to begin
    (:data:`samllava.data.instructions.ANSWER_NORMAL`, ``ANSWER_ANOMALY``); leading markup and an
    "Answer:" prefix are skipped. The one reader of yes/no in the package: Table 5, the judge of
    Table 6 and ``samllava diagnose`` all use it.
    """
    if not isinstance(answer, str):
        raise ValueError(f"answer must be a str, got {type(answer).__name__}")
    match = _YES_NO.match(answer)
    return None if match is None else match.group(1).lower() == "yes"


def description_accuracy(answers: Sequence[str], labels: ArrayLike | Sequence[int]) -> float:
    """Table 5 accuracy: share of answers whose leading yes/no matches the image label
    (1 = anomalous expects yes, 0 = normal expects no); an answer with neither is wrong.

    Args:
        answers: ``N`` free-text answers to "Is there any anomaly in the image?".
        labels: ``(N,)`` binary image labels.
    """
    y = as_binary(as_numpy(labels, "labels"), "labels")
    if y.ndim != 1 or len(answers) != y.size or y.size == 0:
        raise ValueError(f"answers and labels must be non-empty and of equal length, "
                         f"got {len(answers)} answers and labels of shape {y.shape}")
    said = [parse_yes_no(a) for a in answers]
    return float(np.mean([s is not None and s == bool(t) for s, t in zip(said, y)]))


# --------------------------------------------------------------------------- tables


def category_table(rows: Mapping[str, Mapping[str, float | None]]) -> pd.DataFrame:
    """Per-category metrics with a final ``mean`` row.

    Args:
        rows: ``{category: {metric: value}}``; a missing metric or None / NaN is "not
            available": NaN in the table (``results.write_table`` prints "n/a") and left out of
            that column's mean.

    Returns:
        A DataFrame with a ``category`` column, one column per metric (first-seen order) and
        ``len(rows) + 1`` rows, the last one ``mean``.
    """
    if not rows:
        raise ValueError("category_table needs at least one category")
    if "mean" in rows:
        raise ValueError("'mean' is reserved for the mean row; rename that category")
    metrics = list(dict.fromkeys(k for r in rows.values() for k in r))
    data: dict[str, list[float]] = {}
    for metric in metrics:
        column = []
        for cat, r in rows.items():
            v = r.get(metric)
            if isinstance(v, bool) or (v is not None and not isinstance(v, (int, float, np.number))):
                raise ValueError(f"{cat}/{metric} must be a number or None, got {v!r}")
            column.append(np.nan if v is None else float(v))
        data[metric] = column + [float(np.nanmean(column)) if not np.all(np.isnan(column)) else np.nan]
    import pandas as pd  # here, not at the top: the model reads parse_yes_no, and a diagnosis needs no table

    return pd.DataFrame({"category": [*rows, "mean"], **data})


def mean_std(values: ArrayLike | Sequence[float], ddof: int = 1) -> tuple[float, float]:
    """Mean and standard deviation over seeds (``ddof=1``: sample std; NaN for one value).

    A metric that is not available (all values NaN, e.g. pixel metrics without masks) gives
    ``(nan, nan)``; NaN for only some seeds is an error (a failed run must not shrink the mean).
    """
    v = as_numpy(values, "values").astype(np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    nan = np.isnan(v)
    if nan.all():
        return math.nan, math.nan
    if nan.any():
        raise ValueError(f"values contain NaN at positions {np.flatnonzero(nan).tolist()} of {v.size}")
    std = float(v.std(ddof=ddof)) if v.size > ddof else math.nan
    return float(v.mean()), std
