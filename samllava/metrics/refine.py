"""Refining a pixel histogram where its error bound comes from, down to single float values if need be.

Equal-width bins resolve a map whose scores spread over their range, but not one whose pixels crowd
into a sliver of it: the coarse stage's log Lambda approaches 0 from below for every clear defect
(``-exp(-x)`` for a logit ``x`` from ~10 to ~100), so thousands of anomalous and normal pixels shared
the top few of 2^20 bins, the Pixel-AUC bound reached 0.03 and the value sat 2 points from the exact
one. There, a perturbation of 1e-7 (another CPU thread count summing in another order) moved pixels
across bin edges and the fourth decimal with them.

:func:`refine` splits the bins that hold both classes, largest ``pos_b * neg_b`` first, into equal
parts of the *order key* of the float type (the bit pattern read as an ordered integer), so a bin
near 0 splits by orders of magnitude, then by mantissa, and recounts every pixel against the new
edges (``np.searchsorted``). After a few passes the mixed bins hold one representable value each:
their pairs are true ties, counted 1/2 by the exact AUROC too, so they add nothing to the bound
(:attr:`~samllava.metrics.pixel.PixelHistogram.atomic`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from samllava.metrics.inputs import MapsLike, image_pairs

SPLIT = 256  # parts per refined bin and pass
MAX_REFINED = 512  # bins refined per pass: <= SPLIT * MAX_REFINED new edges
MAX_PASSES = 8  # float32 needs <= 32 / log2(SPLIT) = 4 splits to reach single values, float64 8
MAX_KEPT = 2**24  # pixels of crowded bins held in memory (~13 bytes each); more: no refinement, the bound says so
DEFAULT_TOLERANCE = 1e-7  # refine until the Pixel-AUC bound is below this (0.00001 percentage points)

_SIGN = {np.dtype(np.float32): np.uint32(1 << 31), np.dtype(np.float64): np.uint64(1 << 63)}
_UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def order_key(x: np.ndarray) -> np.ndarray:
    """Unsigned integers ordered as the floats ``x`` are (-0.0 one below +0.0), as uint64."""
    u = x.view(_UINT[x.dtype])
    sign = _SIGN[x.dtype]
    return np.where(u & sign, ~u, u | sign).astype(np.uint64)


def from_key(k: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The floats of dtype ``dtype`` whose :func:`order_key` is ``k``."""
    u = k.astype(_UINT[np.dtype(dtype)])
    sign = _SIGN[np.dtype(dtype)]
    return np.where(u & sign, u ^ sign, ~u).view(dtype)


def uniform_edges(lo: float, hi: float, bins: int, dtype: np.dtype) -> np.ndarray:
    """``bins`` equal-width bins over ``[lo, hi]`` as sorted unique edges of ``dtype``; the last edge is the
    next float above ``hi``, so bin ``b`` is ``[edges[b], edges[b+1])`` for every score."""
    inner = (lo + (hi - lo) * np.arange(bins, dtype=np.float64) / bins).astype(dtype)
    top = np.nextafter(np.asarray(hi, dtype=dtype), np.asarray(np.inf, dtype=dtype))
    return np.unique(np.concatenate([np.asarray([lo], dtype=dtype), inner, [top]]) + np.asarray(0, dtype=dtype))


def atomic_bins(edges: np.ndarray) -> np.ndarray:
    """(bins,) True where a bin holds a single value of the edges' float type (its pairs are true ties):
    the next float above its lower edge is its upper edge (so ``[-0.0, +tiny)`` holds only zero)."""
    return np.nextafter(edges[:-1], np.asarray(np.inf, dtype=edges.dtype)) >= edges[1:]


def split_edges(edges: np.ndarray, chosen: np.ndarray, parts: int = SPLIT) -> np.ndarray:
    """``edges`` with each bin of ``chosen`` (indices) cut into up to ``parts`` equal spans of order key."""
    keys = order_key(edges)
    lo, hi = keys[chosen], keys[chosen + 1]
    span = hi - lo
    n = np.minimum(span, np.uint64(parts))  # >= 2 for a splittable bin
    step = span // n
    j = np.arange(1, parts, dtype=np.uint64)
    new = lo[:, None] + step[:, None] * j[None, :]  # (chosen, parts - 1), < hi where j < n
    new = new[j[None, :] < n[:, None]]
    # + 0 turns -0.0 into +0.0: one zero edge, whichever side of the sign the key landed on
    return np.unique(np.concatenate([edges, from_key(new, edges.dtype) + edges.dtype.type(0)]))


def pure_runs(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``(bins + 1,)`` bool: the edges :func:`merge_pure` keeps (runs of bins without anomalous pixels, or
    without normal ones, become one bin; a bin holding both classes is kept as it is)."""
    kind = np.where(pos == 0, 0, np.where(neg == 0, 1, 2))  # 0: no positives, 1: no normals, 2: mixed
    # an empty bin takes the kind of the last non-empty bin before it, so a run never joins the two classes
    filled = np.maximum.accumulate(np.where((pos > 0) | (neg > 0), np.arange(kind.size), 0))
    kind = kind[filled]
    joinable = (kind[:-1] == kind[1:]) & (kind[:-1] != 2)
    return np.concatenate([[True], ~joinable, [True]])  # edge i separates bins i-1 and i


def merge_pure(edges: np.ndarray, neg: np.ndarray, pos: np.ndarray, overlap: np.ndarray | None,
               keep: np.ndarray | None = None):
    """Merge runs of neighbouring bins that hold no anomalous pixel (or no normal one): every metric is
    unchanged (a run without positives adds nothing but its normal count above the positives; without
    normals, nothing but its positives over the same normals below; the FPR-PRO curve is straight along
    it; F1's best threshold in such a run is one of its ends), and later passes search far fewer edges.
    ``edges`` may hold only the kept edges already (``keep``: :func:`pure_runs` of these counts)."""
    keep = pure_runs(neg, pos) if keep is None else keep
    group = np.cumsum(keep[:-1]) - 1  # bin -> merged bin

    def total(x):
        return None if x is None else np.bincount(group, weights=x, minlength=group[-1] + 1)

    kept = edges if edges.size == int(keep.sum()) else edges[keep]
    return kept, total(neg).astype(np.int64), total(pos).astype(np.int64), total(overlap)


def count(maps: MapsLike, masks: MapsLike, edges: np.ndarray, regions: bool, collect: np.ndarray | None = None):
    """Per-bin normal and anomalous pixel counts and region overlap (None without ``regions``) against
    explicit ``edges``, one image at a time; with ``collect`` ((bins,) bool) also the pixels of those bins
    as ``(scores, is_anomalous, 1/|region| or 0)`` (else None)."""
    bins = edges.size - 1
    neg, pos = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    overlap = np.zeros(bins, np.float64) if regions else None
    picked: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for _, a, m in image_pairs(maps, masks):
        x = a.ravel().astype(edges.dtype, copy=False)
        b = np.searchsorted(edges, x, side="right") - 1
        m = m.ravel()
        pos += np.bincount(b[m], minlength=bins)
        neg += np.bincount(b[~m], minlength=bins)
        w = np.zeros(x.size)
        if regions and m.any():
            lab, n = ndimage.label(m.reshape(a.shape), structure=np.ones((3, 3), bool))
            w[m] = (1.0 / np.maximum(np.bincount(lab.ravel(), minlength=n + 1), 1))[lab.ravel()[m]]
            overlap += np.bincount(b[m], weights=w[m], minlength=bins)
        if collect is not None:
            sel = collect[b]
            picked.append((x[sel], m[sel], w[sel]))
    if collect is None:
        return neg, pos, overlap, None
    return neg, pos, overlap, tuple(np.concatenate(parts) for parts in zip(*picked))


def contributions(neg: np.ndarray, pos: np.ndarray, overlap: np.ndarray | None, atomic: np.ndarray | None
                  ) -> np.ndarray:
    """Per bin, its share of the Pixel-AUC bound plus (with regions) of the AUPRO bound's boxes."""
    n_pos, n_neg = max(int(pos.sum()), 1), max(int(neg.sum()), 1)
    c = pos.astype(np.float64) * neg / (float(n_pos) * n_neg)
    if overlap is not None and overlap.sum() > 0:
        c = c + neg / n_neg * overlap / overlap.sum()
    if atomic is not None:
        c[atomic] = 0.0
    return c


def _live(edges: np.ndarray, neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(bins,) the bins that still hold both classes and more than one value."""
    return (pos > 0) & (neg > 0) & ~atomic_bins(edges)


def refine(maps: MapsLike, masks: MapsLike, neg: np.ndarray, pos: np.ndarray, overlap: np.ndarray | None,
           edge_of, lo: float, hi: float, dtype: np.dtype, tolerance: float = DEFAULT_TOLERANCE):
    """Split bins until the Pixel-AUC bound (and the AUPRO boxes) fall below ``tolerance``, no mixed bin
    can be split, or :data:`MAX_PASSES` splits ran. ``neg, pos, overlap`` are the equal-width counts of
    :func:`~samllava.metrics.pixel.pixel_histogram` over ``[lo, hi]``, and ``edge_of(b)`` gives the exact
    lower edges of bins ``b`` (None: equal-width edges of ``dtype`` are made and the data counted once more).

    :func:`merge_pure` leaves few bins; one pass over the data collects the pixels of the bins holding
    both classes (at most :data:`MAX_KEPT`), which every split recounts in memory. Returns ``(neg, pos,
    overlap, atomic)`` of the refined bins (``atomic``: see :func:`atomic_bins`), or None when the
    equal-width counts already meet ``tolerance``."""
    if 0.5 * contributions(neg, pos, overlap, None).sum() <= tolerance:
        return None
    regions = overlap is not None
    dtype = np.dtype(dtype)
    if edge_of is None:
        edges = uniform_edges(lo, hi, neg.size, dtype)
        neg, pos, overlap = count(maps, masks, edges, regions)[:3]
        edges, neg, pos, overlap = merge_pure(edges, neg, pos, overlap)
    else:  # only the edges that survive the merge are computed
        keep = pure_runs(neg, pos)
        inner = np.flatnonzero(keep[1:-1]) + 1
        top = np.nextafter(np.asarray(hi, dtype=dtype), np.asarray(np.inf, dtype=dtype))
        edges = np.concatenate([np.asarray([lo], dtype=dtype), edge_of(inner), [top]])
        edges, neg, pos, overlap = merge_pure(edges, neg, pos, overlap, keep)
    live = _live(edges, neg, pos)
    neg, pos, overlap, kept = count(maps, masks, edges, regions, collect=live)
    if kept[0].size > MAX_KEPT:  # too many crowded pixels to hold: keep the equal-width bins and their bound
        return neg, pos, overlap, atomic_bins(edges)
    for _ in range(MAX_PASSES):
        c = contributions(neg, pos, overlap, atomic_bins(edges))
        if 0.5 * c.sum() <= tolerance or not (c > 0).any():
            break
        chosen = np.sort(np.argsort(-c, kind="stable")[: min(MAX_REFINED, int((c > 0).sum()))])
        edges, neg, pos, overlap, kept = _split(edges, neg, pos, overlap, kept, chosen)
    return neg, pos, overlap, atomic_bins(edges)


def _split(edges, neg, pos, overlap, kept, chosen):
    """Split the bins ``chosen``; the others keep their counts, the kept pixels of the chosen ones are
    recounted; pure runs merged; the kept pixels reduced to those of bins still live."""
    x, m, w = kept
    new = split_edges(edges, chosen)
    bins = new.size - 1
    split = np.zeros(neg.size, dtype=bool)
    split[chosen] = True
    at = np.searchsorted(new, edges[:-1])[~split]  # an unsplit bin starts at its old left edge

    def moved(v, pixels, weights=None):
        out = np.bincount(at, weights=v[~split], minlength=bins)
        return out + np.bincount(pixels, weights=weights, minlength=bins)

    inside = split[np.searchsorted(edges, x, side="right") - 1]
    b = np.searchsorted(new, x[inside], side="right") - 1
    mi = m[inside]
    neg2 = moved(neg, b[~mi]).astype(np.int64)
    pos2 = moved(pos, b[mi]).astype(np.int64)
    ov2 = None if overlap is None else moved(overlap, b[mi], w[inside][mi])
    edges, neg, pos, overlap = merge_pure(new, neg2, pos2, ov2)
    keep = _live(edges, neg, pos)[np.searchsorted(edges, x, side="right") - 1]
    return edges, neg, pos, overlap, (x[keep], m[keep], w[keep])
