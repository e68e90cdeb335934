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
or torch. A data set holds about 10^8 pixels, so pixel metrics never sort or concatenate them:
:func:`pixel_histogram` streams the images twice (global min/max, then per-bin counts with one
``np.bincount`` per chunk) and every pixel metric is read off the histogram. Binning is monotone,
so only pairs of pixels that share a bin can be ordered wrongly; each metric states the largest
possible deviation from its exact (sort-based) value, see :meth:`PixelHistogram.auroc_with_bound`
and :meth:`PixelHistogram.aupro_with_bound`.
"""
from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

if TYPE_CHECKING:
    import torch

ArrayLike = Union[np.ndarray, "torch.Tensor"]
MapsLike = Union[ArrayLike, Sequence[ArrayLike]]

DEFAULT_BINS = 2**20  # bound ~ 0.5/bins * overlap of the two score densities: ~1e-7 on continuous maps
DEFAULT_CHUNK = 2**22  # pixels binned at once: ~50 MB of buffers whatever the data set size
MVTEC_STRUCTURE = np.ones((3, 3), dtype=bool)  # 8-connected regions, as the MVTec AD evaluation
_FLOAT32_EXACT_INT = 2**24  # bin indices above this are not exact in float32


# --------------------------------------------------------------------------- input checks


def _is_tensor(x: Any) -> bool:
    # torch is not imported here: importing it costs ~0.8 GB of resident memory, and an object
    # can only be a tensor if the caller has imported torch already.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _numpy(x: ArrayLike, name: str) -> np.ndarray:
    """A numpy view of ``x`` (torch tensors go to the CPU; bfloat16 becomes float32)."""
    if _is_tensor(x):
        import torch
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype not in (torch.float16, torch.float32, torch.float64):
            x = x.float()  # numpy has no bfloat16
        return x.numpy()
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr


def _binary(y: np.ndarray, name: str) -> np.ndarray:
    """``y`` as bool, after checking that it only holds 0 and 1."""
    if y.dtype == bool:
        return y
    if np.issubdtype(y.dtype, np.integer):
        ok = y.size == 0 or (y.min() >= 0 and y.max() <= 1)  # two reductions, no temporaries
    else:
        ok = bool(((y == 0) | (y == 1)).all())
    if not ok:
        bad = np.unique(y[(y != 0) & (y != 1)])[:5]
        raise ValueError(f"{name} must be binary (0/1 or bool), found values {bad.tolist()}")
    return y != 0


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike, *, metric: str,
                       need_negatives: bool) -> tuple[np.ndarray, np.ndarray]:
    """Check image scores ``(N,)`` and labels ``(N,)``; return float64 scores and bool labels."""
    s, y = _numpy(scores, "scores"), _numpy(labels, "labels")
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got shapes {s.shape} and {y.shape}")
    s = s.astype(np.float64)
    n_bad = int(np.count_nonzero(~np.isfinite(s)))
    if n_bad:
        raise ValueError(f"scores contain {n_bad} NaN or infinite value(s) out of {s.size}")
    y = _binary(y, "labels")
    _check_classes(int(y.sum()), int(y.size - y.sum()), metric=metric, what="samples",
                   need_negatives=need_negatives)
    return s, y


def _check_classes(n_pos: int, n_neg: int, *, metric: str, what: str, need_negatives: bool) -> None:
    if n_pos == 0 or (need_negatives and n_neg == 0):
        raise ValueError(f"{metric} is undefined for a single class: got {n_pos} anomalous (1) and "
                         f"{n_neg} normal (0) {what}")


def _sequence(x: MapsLike, name: str) -> Sequence[ArrayLike]:
    """A stacked ``(N, H, W)`` array or a list of ``(H, W)`` arrays, indexable per image."""
    if isinstance(x, np.ndarray) or _is_tensor(x):
        if x.ndim != 3:
            raise ValueError(f"{name} must be (N, H, W) or a list of (H, W) arrays, got shape {tuple(x.shape)}")
        return x
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        raise ValueError(f"{name} must be an array or a list of arrays, got {type(x).__name__}")
    return x


def _pairs(maps: MapsLike, masks: MapsLike) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(label, map (H, W), mask (H, W) bool)`` per image, converting one image at a time."""
    maps_s, masks_s = _sequence(maps, "maps"), _sequence(masks, "masks")
    if len(maps_s) != len(masks_s) or len(maps_s) == 0:
        raise ValueError(f"maps and masks must hold the same, non-zero number of images, "
                         f"got {len(maps_s)} and {len(masks_s)}")
    for i in range(len(maps_s)):
        a, m = _numpy(maps_s[i], f"maps[{i}]"), _numpy(masks_s[i], f"masks[{i}]")
        if a.ndim != 2 or a.shape != m.shape:
            raise ValueError(f"maps[{i}] and masks[{i}] must be (H, W) of equal shape, "
                             f"got {a.shape} and {m.shape}")
        yield f"[{i}]", a, _binary(m, f"masks[{i}]")


# --------------------------------------------------------------------------- image level


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image-AUC: area under the ROC curve, i.e. P(score of an anomalous image > score of a
    normal one) with ties counted 1/2 (exact, ``sklearn.metrics.roc_auc_score``).

    Args:
        scores: ``(N,)`` image anomaly scores, higher = more anomalous.
        labels: ``(N,)`` 1 = anomalous, 0 = normal; both classes must occur.
    """
    s, y = _scores_and_labels(scores, labels, metric="AUROC", need_negatives=True)
    return float(roc_auc_score(y, s))


def f1_max(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image F1-max: ``max_t 2 P(t) R(t) / (P(t) + R(t))`` over every threshold of
    ``sklearn.metrics.precision_recall_curve``. Shapes as in :func:`image_auroc`; needs at
    least one anomalous image."""
    s, y = _scores_and_labels(scores, labels, metric="F1", need_negatives=False)
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


# --------------------------------------------------------------------------- pixel level


@dataclass(frozen=True)
class PixelHistogram:
    """Per-bin pixel counts of a whole data set, from which every pixel metric is read.

    Bin ``b`` holds the scores in ``[lo + b*w, lo + (b+1)*w)``, ``w = (hi - lo) / bins`` (the
    top score goes to the last bin). Binning is monotone: a higher score never lands in a lower
    bin, so pixels in different bins are ordered as their scores are; only pairs inside one bin
    are unresolved.

    Attributes:
        neg: ``(bins,)`` int64, normal pixels per bin.
        pos: ``(bins,)`` int64, anomalous pixels per bin.
        region_overlap: ``(bins,)`` float64, sum over the anomalous pixels of the bin of
            ``1 / |region of the pixel|`` (None when regions were not computed).
        n_regions: number of 8-connected anomalous regions over all images (0 when not computed).
        lo, hi: global min / max score.
    """

    neg: np.ndarray
    pos: np.ndarray
    region_overlap: np.ndarray | None
    n_regions: int
    lo: float
    hi: float

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg.sum())

    def auroc_with_bound(self) -> tuple[float, float]:
        """Pixel-AUC from the counts, and the largest possible deviation from the exact value.

        ``AUC = sum_b pos_b * (neg_{<b} + neg_b / 2) / (P N)``: pairs in different bins are
        counted exactly, pairs sharing a bin as ties (1/2). The exact AUC counts such a pair as
        0, 1/2 or 1, so ``|AUC - AUC_exact| <= bound = 0.5 * sum_b pos_b neg_b / (P N)``.
        """
        _check_classes(self.n_pos, self.n_neg, metric="pixel AUROC", what="pixels", need_negatives=True)
        pos, neg = self.pos.astype(np.float64), self.neg.astype(np.float64)
        pairs = float(self.n_pos) * float(self.n_neg)
        neg_below = np.cumsum(neg) - neg
        auc = float(pos @ (neg_below + 0.5 * neg)) / pairs
        return auc, 0.5 * float(pos @ neg) / pairs

    def f1_max(self) -> float:
        """Pixel F1-max over the bin edges: ``max_t 2 TP / (TP + FP + P)`` with pixels in bins
        ``>= t`` predicted anomalous. Every bin edge is a real threshold, so this is a lower bound
        of the exact F1-max, equal to it when no bin holds two distinct scores."""
        _check_classes(self.n_pos, self.n_neg, metric="pixel F1", what="pixels", need_negatives=False)
        tp = np.cumsum(self.pos[::-1].astype(np.float64))
        fp = np.cumsum(self.neg[::-1].astype(np.float64))
        return float((2 * tp / (tp + fp + self.n_pos)).max())

    def aupro_with_bound(self, fpr_limit: float = 0.3) -> tuple[float, float]:
        """AUPRO (Bergmann et al. 2021) and the largest possible deviation from the exact value.

        Lowering the threshold bin by bin from the top gives the points ``FPR_t`` (share of all
        normal pixels of the data set above the threshold) and ``PRO_t`` (mean over the
        anomalous regions of the share of the region above it), from ``(0, 0)`` to ``(1, 1)``.
        The area under this piecewise-linear curve from 0 to ``fpr_limit`` (the end point
        interpolated linearly) is divided by ``fpr_limit``, as MVTec's ``trapezoid(..., x_max)``.

        Bound: bin edges are points of the exact curve; inside a bin the exact curve is a
        monotone path between the same two points, so it differs from the chord by at most half
        the box ``dFPR_b * dPRO_b`` (the whole box for the bin cut at ``fpr_limit``);
        ``bound = (sum_b 0.5 dFPR_b dPRO_b + cut box) / fpr_limit``.
        """
        if not 0.0 < fpr_limit <= 1.0:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        if self.region_overlap is None:
            raise ValueError("this histogram was built with regions=False; AUPRO needs regions=True")
        _check_classes(self.n_pos, self.n_neg, metric="AUPRO", what="pixels", need_negatives=True)
        fpr = np.concatenate([[0.0], np.cumsum(self.neg[::-1].astype(np.float64)) / self.n_neg])
        covered = np.cumsum(self.region_overlap[::-1])  # sum of region shares above each threshold
        # covered[-1] equals n_regions up to float rounding; dividing by it ends the curve at 1 exactly
        pro = np.concatenate([[0.0], covered / covered[-1]])
        k = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points fpr[:k] <= fpr_limit
        d_fpr, d_pro = np.diff(fpr[:k]), np.diff(pro[:k])
        area = float(np.sum(d_fpr * (pro[: k - 1] + pro[1:k]) / 2))
        bound = 0.5 * float(d_fpr @ d_pro)
        if k < fpr.size and fpr[k - 1] < fpr_limit:  # cut the segment that crosses fpr_limit
            f0, f1, p0, p1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
            p_end = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)
            area += (p0 + p_end) / 2 * (fpr_limit - f0)
            bound += (p1 - p0) * (fpr_limit - f0)
        return float(area / fpr_limit), float(bound / fpr_limit)


class _BinCounts:
    """Per-bin totals of a stream of pixels.

    Pixels go through two preallocated buffers of ``chunk`` entries (float scores, int codes),
    so memory stays bounded and no per-image arrays are allocated; small images fill one buffer
    together, so each ``np.bincount`` (whose output has ``2 * bins`` entries) sees ``chunk``
    pixels. Binning ``floor((x - lo) * scale)``, clipped to ``[0, bins)``, is monotone in ``x``
    because each rounded float operation is.
    """

    def __init__(self, lo: float, scale: float, bins: int, work: type, regions: bool, chunk: int) -> None:
        self.lo, self.scale, self.bins = lo, scale, bins
        self.counts = np.zeros(2 * bins, dtype=np.int64)  # interleaved (normal, anomalous) per bin
        self.overlap = np.zeros(bins, dtype=np.float64) if regions else None
        self._t = np.empty(chunk, dtype=work)
        self._codes = np.empty(chunk, dtype=np.intp)  # 2 * bin + is_anomalous
        self._fill = 0
        self._region: list[tuple[np.ndarray, np.ndarray]] = []  # (bin, 1/|region|) of anomalous pixels

    def add(self, x: np.ndarray, m: np.ndarray, region: np.ndarray | None = None,
            inv_size: np.ndarray | None = None) -> None:
        """Add flat scores ``x`` with their flat bool mask ``m``; for AUPRO also the flat region
        label of each pixel and ``inv_size[label] = 1 / |region|``."""
        start = 0
        while start < x.size:
            k = min(self._codes.size - self._fill, x.size - start)
            t, codes = self._t[:k], self._codes[self._fill:self._fill + k]
            # cast to the working dtype first, so every image is binned by the same arithmetic
            np.subtract(x[start:start + k], self.lo, out=t, dtype=t.dtype, casting="unsafe")
            t *= self.scale
            np.clip(t, 0, self.bins - 1, out=t)
            np.copyto(codes, t, casting="unsafe")  # truncation = floor, t >= 0
            mk = m[start:start + k]
            if region is not None and inv_size is not None and mk.any():
                self._region.append((codes[mk], inv_size[region[start:start + k][mk]]))
            codes <<= 1
            codes |= mk
            self._fill += k
            start += k
            if self._fill == self._codes.size:
                self.flush()

    def flush(self) -> None:
        self.counts += np.bincount(self._codes[:self._fill], minlength=2 * self.bins)
        self._fill = 0
        if self._region and self.overlap is not None:
            region_bins, weights = zip(*self._region)
            self.overlap += np.bincount(np.concatenate(region_bins), weights=np.concatenate(weights),
                                        minlength=self.bins)
            self._region = []


def pixel_histogram(maps: MapsLike, masks: MapsLike, bins: int = DEFAULT_BINS, *, regions: bool = False,
                    chunk: int = DEFAULT_CHUNK) -> PixelHistogram:
    """Stream a data set of anomaly maps into per-bin counts (bounded memory, no sort).

    Pass 1 checks every image (shapes, binary masks, finite scores) and finds the global
    min/max; pass 2 bins ``chunk`` pixels at a time in float32 and adds
    ``np.bincount(2 * bin + mask)`` to int64 counts. With ``regions=True`` each mask is split into
    8-connected regions (``scipy.ndimage.label``, as the MVTec AD evaluation) and each anomalous
    pixel adds ``1 / |its region|`` to its bin (one weighted bincount), which is all the PRO
    curve needs: ``PRO_t = sum_{pixels above t} 1/|region| / n_regions``.

    Args:
        maps: ``(N, H, W)`` or a list of ``(H, W)`` anomaly maps (numpy or torch), higher = more
            anomalous.
        masks: the same shapes, binary (0/1 or bool), 1 = anomalous pixel.
        bins: number of equal-width bins between the global min and max.
        regions: also accumulate the per-region overlap needed by AUPRO.
        chunk: pixels binned at once (temporaries ~ 24 bytes * chunk, plus 16 bytes * bins).
    """
    if bins < 1 or chunk < 1:
        raise ValueError(f"bins and chunk must be positive, got bins={bins}, chunk={chunk}")
    lo, hi = math.inf, -math.inf
    for name, a, _ in _pairs(maps, masks):  # pass 1: validate everything before the heavy pass
        if a.size:
            a_lo, a_hi = float(a.min()), float(a.max())  # NaN propagates through min/max
            if not (math.isfinite(a_lo) and math.isfinite(a_hi)):
                n_bad = int(np.count_nonzero(~np.isfinite(a)))
                raise ValueError(f"maps{name} contains {n_bad} NaN or infinite value(s)")
            lo, hi = min(lo, a_lo), max(hi, a_hi)
    if not math.isfinite(lo):
        raise ValueError("maps hold no pixels")
    scale = bins / (hi - lo) if hi > lo else 0.0
    # float32 is exact enough (monotone whatever the rounding) unless the range or bin count
    # leaves float32: then fall back to float64.
    small = bins <= _FLOAT32_EXACT_INT and scale < 1e30 and max(abs(lo), abs(hi)) < 1e30
    work = np.float32 if small else np.float64

    acc = _BinCounts(lo, scale, bins, work, regions, chunk)
    n_regions = 0
    for _, a, m in _pairs(maps, masks):  # pass 2
        if regions:
            lab, n = ndimage.label(m, structure=MVTEC_STRUCTURE)
            n_regions += n
            inv_size = 1.0 / np.maximum(np.bincount(lab.ravel(), minlength=n + 1), 1)
            acc.add(a.ravel(), m.ravel(), lab.ravel(), inv_size)
        else:
            acc.add(a.ravel(), m.ravel())
    acc.flush()
    return PixelHistogram(neg=acc.counts[0::2].copy(), pos=acc.counts[1::2].copy(),
                          region_overlap=acc.overlap, n_regions=n_regions, lo=lo, hi=hi)


def pixel_auroc_with_bound(maps: MapsLike, masks: MapsLike, bins: int = DEFAULT_BINS) -> tuple[float, float]:
    """Pixel-AUC over all pixels of a data set and its error bound (see
    :meth:`PixelHistogram.auroc_with_bound`): ``|auroc - exact| <= bound``. Inputs as in
    :func:`pixel_histogram`."""
    return pixel_histogram(maps, masks, bins).auroc_with_bound()


def pixel_auroc(maps: MapsLike, masks: MapsLike, bins: int = DEFAULT_BINS) -> float:
    """Pixel-AUC over all pixels of a data set (histogram; within the bound of
    :func:`pixel_auroc_with_bound` of ``roc_auc_score`` on the concatenated pixels)."""
    return pixel_auroc_with_bound(maps, masks, bins)[0]


def aupro_with_bound(maps: MapsLike, masks: MapsLike, fpr_limit: float = 0.3,
                     bins: int = DEFAULT_BINS) -> tuple[float, float]:
    """AUPRO (Bergmann et al., MVTec AD evaluation) up to ``fpr_limit`` and its error bound
    (see :meth:`PixelHistogram.aupro_with_bound`). Inputs as in :func:`pixel_histogram`."""
    return pixel_histogram(maps, masks, bins, regions=True).aupro_with_bound(fpr_limit)


def aupro(maps: MapsLike, masks: MapsLike, fpr_limit: float = 0.3, bins: int = DEFAULT_BINS) -> float:
    """AUPRO: normalised area under the per-region-overlap vs false-positive-rate curve,
    ``fpr_limit`` = 0.3 as in the MVTec AD evaluation."""
    return aupro_with_bound(maps, masks, fpr_limit, bins)[0]


def pixel_f1_max(maps: MapsLike, masks: MapsLike, bins: int = DEFAULT_BINS) -> float:
    """Pixel F1-max over all pixels (histogram; a lower bound of the exact value, see
    :meth:`PixelHistogram.f1_max`)."""
    return pixel_histogram(maps, masks, bins).f1_max()


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
    y = _binary(_numpy(labels, "labels"), "labels")
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
    return pd.DataFrame({"category": [*rows, "mean"], **data})


def mean_std(values: ArrayLike | Sequence[float], ddof: int = 1) -> tuple[float, float]:
    """Mean and standard deviation over seeds (``ddof=1``: sample std; NaN for one value).

    A metric that is not available (all values NaN, e.g. pixel metrics without masks) gives
    ``(nan, nan)``; NaN for only some seeds is an error (a failed run must not shrink the mean).
    """
    v = _numpy(values, "values").astype(np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    nan = np.isnan(v)
    if nan.all():
        return math.nan, math.nan
    if nan.any():
        raise ValueError(f"values contain NaN at positions {np.flatnonzero(nan).tolist()} of {v.size}")
    std = float(v.std(ddof=ddof)) if v.size > ddof else math.nan
    return float(v.mean()), std
