"""Pixel-level metrics (Pixel-AUC, AUPRO, pixel F1-max), read off one streamed score histogram.

A data set holds about 10^8 pixels, so pixel metrics never sort or concatenate them:
:func:`pixel_histogram` streams the images twice (global min/max, then per-bin counts with one
``np.bincount`` per chunk) and every pixel metric is read off the histogram. Binning is monotone,
so only pairs of pixels that share a bin can be ordered wrongly; each metric states the largest
possible deviation from its exact (sort-based) value, see :meth:`PixelHistogram.auroc_with_bound`
and :meth:`PixelHistogram.aupro_with_bound`. Where pixels crowd into a few bins, :mod:`.refine` splits
those bins until the bound is below a tolerance or they hold single float values (true ties).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from samllava.metrics.inputs import MapsLike, check_classes, image_pairs
from samllava.metrics.refine import DEFAULT_TOLERANCE, from_key, order_key, refine

DEFAULT_BINS = 2**20  # bound ~ 0.5/bins * overlap of the two score densities: ~1e-7 on continuous maps
DEFAULT_CHUNK = 2**22  # pixels binned at once: ~50 MB of buffers whatever the data set size
MVTEC_STRUCTURE = np.ones((3, 3), dtype=bool)  # 8-connected regions, as the MVTec AD evaluation
_FLOAT32_EXACT_INT = 2**24  # bin indices above this are not exact in float32


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
        atomic: ``(bins,)`` bool, True for a bin that holds one float value only (refined bins,
            :mod:`.refine`): its pairs are true ties, counted 1/2 by the exact metric too, so it adds
            nothing to a bound. None: equal-width bins, none known to be atomic.
    """

    neg: np.ndarray
    pos: np.ndarray
    region_overlap: np.ndarray | None
    n_regions: int
    lo: float
    hi: float
    atomic: np.ndarray | None = None

    def _inexact(self) -> np.ndarray:
        """(bins,) 1.0 where a bin's pairs may be ordered wrongly, 0.0 where they are true ties."""
        return np.ones(self.neg.size) if self.atomic is None else (~self.atomic).astype(np.float64)

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
        0, 1/2 or 1, so ``|AUC - AUC_exact| <= bound = 0.5 * sum_b pos_b neg_b / (P N)`` over the bins
        that are not :attr:`atomic`.
        """
        check_classes(self.n_pos, self.n_neg, metric="pixel AUROC", what="pixels", need_negatives=True)
        pos, neg = self.pos.astype(np.float64), self.neg.astype(np.float64)
        pairs = float(self.n_pos) * float(self.n_neg)
        neg_below = np.cumsum(neg) - neg
        auc = float(pos @ (neg_below + 0.5 * neg)) / pairs
        return auc, 0.5 * float(pos @ (neg * self._inexact())) / pairs

    def f1_max(self) -> float:
        """Pixel F1-max over the bin edges: ``max_t 2 TP / (TP + FP + P)`` with pixels in bins
        ``>= t`` predicted anomalous. Every bin edge is a real threshold, so this is a lower bound
        of the exact F1-max, equal to it when no bin holds two distinct scores."""
        check_classes(self.n_pos, self.n_neg, metric="pixel F1", what="pixels", need_negatives=False)
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
        check_classes(self.n_pos, self.n_neg, metric="AUPRO", what="pixels", need_negatives=True)
        fpr = np.concatenate([[0.0], np.cumsum(self.neg[::-1].astype(np.float64)) / self.n_neg])
        covered = np.cumsum(self.region_overlap[::-1])  # sum of region shares above each threshold
        # covered[-1] equals n_regions up to float rounding; dividing by it ends the curve at 1 exactly
        pro = np.concatenate([[0.0], covered / covered[-1]])
        k = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points fpr[:k] <= fpr_limit
        d_fpr, d_pro = np.diff(fpr[:k]), np.diff(pro[:k])
        inexact = self._inexact()[::-1]  # segment i is bin (bins - 1 - i); an atomic bin's chord is exact
        area = float(np.sum(d_fpr * (pro[: k - 1] + pro[1:k]) / 2))
        bound = 0.5 * float(d_fpr @ (d_pro * inexact[: k - 1]))
        if k < fpr.size and fpr[k - 1] < fpr_limit:  # cut the segment that crosses fpr_limit
            f0, f1, p0, p1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
            p_end = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)
            area += (p0 + p_end) / 2 * (fpr_limit - f0)
            bound += (p1 - p0) * (fpr_limit - f0) * inexact[k - 1]
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

    def bin_of(self, x: np.ndarray) -> np.ndarray:
        """The bin of each score in ``x``, by the arithmetic of :meth:`add`."""
        t = np.subtract(x, self.lo, dtype=self._t.dtype, casting="unsafe")
        t *= self.scale
        np.clip(t, 0, self.bins - 1, out=t)
        return t.astype(np.intp)

    def edge_of(self, b: np.ndarray) -> np.ndarray:
        """The lower edges of bins ``b`` (``1 <= b < bins``) in the working dtype: the smallest float that
        :meth:`bin_of` puts in bin ``b`` or above (equal edges: a bin no float reaches). Found by bisection
        on the floats' order keys, from a bracket around ``lo + b / scale`` (binning is monotone)."""
        dt = self._t.dtype
        c = (self.lo + b / self.scale).astype(np.float64)
        delta = 8 * np.finfo(dt).eps * (abs(self.lo) + self.bins / self.scale) + 1e-300
        for _ in range(60):  # widen the bracket until f(left) < b <= f(right)
            left = np.maximum(c - delta, self.lo).astype(dt)
            right = (c + delta).astype(dt)
            bad = (self.bin_of(left) >= b) & (left > self.lo) | (self.bin_of(right) < b)
            if not bad.any():
                break
            delta *= 4
        lo_k, hi_k = order_key(left), order_key(right)
        for _ in range(8 * dt.itemsize + 2):
            gap = hi_k - lo_k
            if not (gap > 1).any():
                break
            mid = lo_k + gap // np.uint64(2)
            up = self.bin_of(from_key(mid, dt)) >= b
            hi_k, lo_k = np.where(up, mid, hi_k), np.where(up, lo_k, mid)
        edge = from_key(hi_k, dt) + dt.type(0)  # + 0: one zero, never -0.0
        return np.where(self.bin_of(left) >= b, left, edge)  # left = lo: the bin starts at the lowest score

    def flush(self) -> None:
        self.counts += np.bincount(self._codes[:self._fill], minlength=2 * self.bins)
        self._fill = 0
        if self._region and self.overlap is not None:
            region_bins, weights = zip(*self._region)
            self.overlap += np.bincount(np.concatenate(region_bins), weights=np.concatenate(weights),
                                        minlength=self.bins)
            self._region = []


def pixel_histogram(maps: MapsLike, masks: MapsLike, bins: int = DEFAULT_BINS, *, regions: bool = False,
                    chunk: int = DEFAULT_CHUNK, tolerance: float | None = DEFAULT_TOLERANCE) -> PixelHistogram:
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
        tolerance: when the Pixel-AUC bound of the equal-width bins exceeds it, :func:`.refine.refine`
            splits the crowded bins (more passes over the data); None keeps the equal-width bins.
    """
    if bins < 1 or chunk < 1:
        raise ValueError(f"bins and chunk must be positive, got bins={bins}, chunk={chunk}")
    lo, hi = math.inf, -math.inf
    single = True  # every map float32 or narrower: refined edges are float32 values
    for name, a, _ in image_pairs(maps, masks):  # pass 1: validate everything before the heavy pass
        single = single and a.dtype in (np.float16, np.float32)
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
    for _, a, m in image_pairs(maps, masks):  # pass 2
        if regions:
            lab, n = ndimage.label(m, structure=MVTEC_STRUCTURE)
            n_regions += n
            inv_size = 1.0 / np.maximum(np.bincount(lab.ravel(), minlength=n + 1), 1)
            acc.add(a.ravel(), m.ravel(), lab.ravel(), inv_size)
        else:
            acc.add(a.ravel(), m.ravel())
    acc.flush()
    return _refined(maps, masks, acc, n_regions, hi, single, tolerance)


def _refined(maps, masks, acc: _BinCounts, n_regions: int, hi: float, single: bool, tolerance: float | None
             ) -> PixelHistogram:
    """The histogram of ``acc``, refined where its bound exceeds ``tolerance`` (:func:`.refine.refine`)."""
    neg, pos, overlap, atomic, lo = acc.counts[0::2].copy(), acc.counts[1::2].copy(), acc.overlap, None, acc.lo
    # the edges of these very bins when the maps are in the working dtype; else refine recounts once
    edge_of = acc.edge_of if single and acc._t.dtype == np.float32 else None
    refined = None if tolerance is None or hi <= lo else refine(
        maps, masks, neg, pos, overlap, edge_of, lo, hi, np.float32 if single else np.float64, tolerance)
    if refined is not None:
        neg, pos, overlap, atomic = refined
    elif tolerance is not None and hi == lo:  # one value: every pair a true tie
        atomic = np.ones(neg.size, dtype=bool)
    return PixelHistogram(neg=neg, pos=pos, region_overlap=overlap, n_regions=n_regions, lo=lo, hi=hi,
                          atomic=atomic)


def pixel_auroc_with_bound(maps: MapsLike, masks: MapsLike, bins: int = DEFAULT_BINS,
                           tolerance: float | None = DEFAULT_TOLERANCE) -> tuple[float, float]:
    """Pixel-AUC over all pixels of a data set and its error bound (see
    :meth:`PixelHistogram.auroc_with_bound`): ``|auroc - exact| <= bound``. Inputs as in
    :func:`pixel_histogram`."""
    return pixel_histogram(maps, masks, bins, tolerance=tolerance).auroc_with_bound()


def pixel_auroc(maps: MapsLike, masks: MapsLike, bins: int = DEFAULT_BINS,
                tolerance: float | None = DEFAULT_TOLERANCE) -> float:
    """Pixel-AUC over all pixels of a data set (histogram; within the bound of
    :func:`pixel_auroc_with_bound` of ``roc_auc_score`` on the concatenated pixels)."""
    return pixel_auroc_with_bound(maps, masks, bins, tolerance)[0]


def aupro_with_bound(maps: MapsLike, masks: MapsLike, fpr_limit: float = 0.3, bins: int = DEFAULT_BINS,
                     tolerance: float | None = DEFAULT_TOLERANCE) -> tuple[float, float]:
    """AUPRO (Bergmann et al., MVTec AD evaluation) up to ``fpr_limit`` and its error bound
    (see :meth:`PixelHistogram.aupro_with_bound`). Inputs as in :func:`pixel_histogram`."""
    return pixel_histogram(maps, masks, bins, regions=True, tolerance=tolerance).aupro_with_bound(fpr_limit)


def aupro(maps: MapsLike, masks: MapsLike, fpr_limit: float = 0.3, bins: int = DEFAULT_BINS,
          tolerance: float | None = DEFAULT_TOLERANCE) -> float:
    """AUPRO: normalised area under the per-region-overlap vs false-positive-rate curve,
    ``fpr_limit`` = 0.3 as in the MVTec AD evaluation."""
    return aupro_with_bound(maps, masks, fpr_limit, bins, tolerance)[0]


def pixel_f1_max(maps: MapsLike, masks: MapsLike, bins: int = DEFAULT_BINS,
                 tolerance: float | None = DEFAULT_TOLERANCE) -> float:
    """Pixel F1-max over all pixels (histogram; a lower bound of the exact value, see
    :meth:`PixelHistogram.f1_max`)."""
    return pixel_histogram(maps, masks, bins, tolerance=tolerance).f1_max()
