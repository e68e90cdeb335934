"""Few-shot normal memory and the modulation map Lambda (Sec. 3.1, Eq. 2).

The K normal support images give a memory M^s of L2-normalised patch features per level s.
A query patch's distance to the memory is ``d_s = 1 - max cos`` over M^s, computed for the whole
batch as one matrix product per level. Levels disagree in scale (a shallow CNN stage has larger
typical distances than a deep ViT block), so each is divided by a *normal scale* m_s measured
on the support set itself; then

    s_ctx = mean_s d_s / m_s,   Lambda = sigmoid(beta * (s_ctx - 1)),   H' = H * Lambda (Eq. 2).

With this normalisation s_ctx = 1 means "as far from the memory as a typical normal patch", so
Lambda = 0.5 there, below 0.5 suppresses and above 0.5 keeps (the paper writes Lambda =
Sigmoid(s_ctx) without stating a centre or scale; beta = ``FewShotConfig.sharpness``).

The normal scale m_s is the median, over support patches, of their nearest-neighbour distance
to the *other* support patches:

* K > 1: leave-one-image-out - a patch may not match any patch of its own image. This is exactly
  the situation of a normal query image, whose patches never occur in the memory.
* K = 1: leaving the image out is impossible; leaving only the patch itself out is not enough,
  because its grid neighbours share most of its receptive field and make the distance near 0
  (every normal query would then saturate Lambda at 1). We leave out the patch's
  (2r+1)x(2r+1) grid neighbourhood (r = ``exclusion_radius``, default 1), forcing matches from
  elsewhere in the image. For textures and repeated parts that resembles another normal image;
  for unique object parts it overestimates the scale, which errs towards suppression (Lambda
  < 0.5 on normal regions) rather than towards saturation.

The median (not the mean) keeps a few genuinely unusual support patches from inflating m_s.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from samllava.coarse.backbone import FeatureExtractor, check_images


class CalibrationOutput(NamedTuple):
    s_ctx: torch.Tensor  # (B, S, S) context anomaly score, mean of d_s / m_s
    lam: torch.Tensor  # (B, S, S) Lambda in (0, 1)
    log_lam: torch.Tensor  # (B, S, S) log Lambda, exact where Lambda rounds to 1 in float32
    distances: list[torch.Tensor]  # per level (B, S, S) raw d_s = 1 - max cos


def modulation(s_ctx: torch.Tensor, sharpness: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2's modulation map: ``Lambda = sigmoid(beta * (s_ctx - 1))`` and ``log Lambda``, from one logit.

    ``log Lambda`` is computed with log-sigmoid, not as ``log(Lambda)``: Lambda rounds to exactly 1.0
    in float32 once ``beta (s_ctx - 1) > ~17``, which would tie every clear defect at the top of the
    ranking that AUROC measures (the coarse stage ranks in log space, :class:`~samllava.coarse.stage.CoarseLocalizer`).
    """
    logit = sharpness * (s_ctx - 1)
    return torch.sigmoid(logit), F.logsigmoid(logit)


def patch_features(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """(B, C, h, w) maps -> L2-normalised patch features (B, h*w, C)."""
    return [F.normalize(m.flatten(2).transpose(1, 2), dim=-1) for m in maps]


# Similarities per tile: TILE_COLUMNS memory patches by as many query rows as make TILE similarities (4 MB,
# one buffer allocated once per call), the maximum kept running across the column tiles. A tile that fits in
# the caches is written and read back there; rows-only blocks of the whole memory send every similarity out
# to main memory and back, and the products over a 40-channel level are bound by that traffic.
TILE = 2**20
TILE_COLUMNS = 4096


def max_similarity(query: torch.Tensor, memory_t: torch.Tensor, *, own: tuple[int, int] | None = None,
                   near: torch.Tensor | None = None, tile: int = TILE, buffer: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Each query row's largest dot product with the memory's columns, tile by tile (bounded memory).

    Args:
        query: (R, C).
        memory_t: (C, M), the memory transposed.
        own: columns [a, b) no row may match (a held-out image's own patches).
        near: (R, M) bool, True where a row may not match a column (K = 1: the patch's grid neighbours).
        tile: similarities per tile (at most TILE_COLUMNS columns wide).
        buffer: a float tensor of at least ``max(tile, TILE_COLUMNS)`` elements to write the tiles into,
            for a caller that calls many times (allocated here when None).

    Returns:
        (R,); -inf for a row that may match nothing.
    """
    r, m = query.shape[0], memory_t.shape[1]
    cols = min(m, TILE_COLUMNS)
    rows = max(1, min(r, tile // max(1, cols)))
    flat = query.new_empty(rows * cols) if buffer is None else buffer  # each tile a contiguous view (mm's out=)
    part = query.new_empty(rows)
    best = query.new_full((r,), float("-inf"))
    for j in range(0, m, cols):
        jj = min(m, j + cols)
        if own is not None and own[0] <= j and jj <= own[1]:
            continue  # the whole tile is excluded
        mem = memory_t[:, j:jj]
        for i in range(0, r, rows):
            ii = min(r, i + rows)
            sim = torch.mm(query[i:ii], mem, out=flat[:(ii - i) * (jj - j)].view(ii - i, jj - j))
            if own is not None and max(own[0], j) < min(own[1], jj):
                sim[:, max(own[0], j) - j:min(own[1], jj) - j] = float("-inf")
            if near is not None:
                sim.masked_fill_(near[i:ii, j:jj], float("-inf"))
            torch.amax(sim, dim=-1, out=part[:ii - i])
            torch.maximum(best[i:ii], part[:ii - i], out=best[i:ii])
    return best


def min_cosine_distance(query: torch.Tensor, memory: torch.Tensor, tile: int = TILE) -> torch.Tensor:
    """``1 - max cos`` of each query patch to the memory, as matrix products over tiles of query patches
    and memory patches (:func:`max_similarity`: bounded memory whatever B, N and M).

    Every tile is written into one buffer allocated once: allocating and freeing a block of megabytes
    per step made glibc's heap grow by gigabytes over a large support (docs/decisions.md).

    Args:
        query: (B, N, C) L2-normalised.
        memory: (M, C) L2-normalised.

    Returns:
        (B, N) distances in [0, 2].
    """
    best = max_similarity(query.reshape(-1, query.shape[-1]), memory.t(), tile=tile)
    return (1 - best.view(query.shape[:-1])).clamp_min(0)  # clamp: rounding can give -1e-7


def upsample(grid: torch.Tensor, side: int) -> torch.Tensor:
    """(B, h, w) -> (B, side, side), bilinear."""
    return F.interpolate(grid.unsqueeze(1), size=(side, side), mode="bilinear", align_corners=False).squeeze(1)


# Support images embedded per forward pass of the backbone: the support's cost and peak memory grow
# linearly with K instead of holding every activation of a folder of hundreds at once.
SUPPORT_CHUNK = 16
# Held-out (calibration) images: all support images up to this many, else this many spread over the
# support. Their work is (n_cal * h*w) x (K * h*w) similarities per level: linear in K, not quadratic.
MAX_CALIBRATION_IMAGES = 32


def calibration_indices(k: int, n_max: int = MAX_CALIBRATION_IMAGES) -> torch.Tensor:
    """Indices of the support images that are scored held out: all of them for K <= n_max, else n_max
    evenly spread over the support (deterministic: the same support gives the same thresholds)."""
    if k <= n_max:
        return torch.arange(k, device="cpu")
    return torch.linspace(0, k - 1, n_max, device="cpu").round().long()


def normal_scale(memory: torch.Tensor, grid: tuple[int, int], exclusion_radius: int = 1) -> torch.Tensor:
    """m_s: median nearest-neighbour distance of support patches to the other support patches.

    Args:
        memory: (K, h*w, C) L2-normalised support features of one level.
        grid: (h, w) of the level.
        exclusion_radius: with K = 1, grid neighbours within this Chebyshev radius are excluded.

    Returns:
        scalar tensor, the lower median (``torch.median``); the module docstring says why the exclusions.
    """
    return held_out_distances(memory, grid, exclusion_radius).median()


def held_out_distances(memory: torch.Tensor, grid: tuple[int, int], exclusion_radius: int = 1,
                       queries: torch.Tensor | None = None, tile: int = TILE) -> torch.Tensor:
    """(Q, h, w): each patch of the support images ``queries`` (default all K), at distance ``1 - max cos``
    from the support patches it may not match (other images for K > 1; outside its grid neighbourhood
    for K = 1): how far a *normal* patch lies from the memory, the reference for m_s and for the verdict.

    The (Q*h*w, K*h*w) similarities are computed in tiles (:func:`max_similarity`) of one query image's
    rows at a time, so that image's own columns are one slice to exclude, into one buffer allocated once:
    bounded memory and no mask the size of the tile.

    Args:
        memory: (K, h*w, C) L2-normalised support features of one level.
        grid: (h, w) of the level.
        queries: (Q,) indices of the held-out images.
    """
    k, n, _ = memory.shape
    h, w = grid
    queries = torch.arange(k) if queries is None else queries
    feats_t = memory.reshape(k * n, -1).t()
    near = None
    if k == 1:  # leave the patch's (2r+1)x(2r+1) grid neighbourhood out: (n, n), once
        idx = torch.arange(n, device=memory.device)
        near = torch.maximum(((idx // w)[:, None] - (idx // w)[None, :]).abs(),
                             ((idx % w)[:, None] - (idx % w)[None, :]).abs()) <= exclusion_radius
        if bool(near.all(1).any()):
            raise ValueError(f"K=1 normal scale: a {h}x{w} grid leaves no patch outside radius {exclusion_radius}; "
                             "use a smaller exclusion_radius or a finer level")
    buffer = memory.new_empty(max(tile, TILE_COLUMNS))  # a tile is at most this big (one row when tile < columns)
    best = torch.stack([max_similarity(memory[q], feats_t, own=None if near is not None else (q * n, (q + 1) * n),
                                       near=near, tile=tile, buffer=buffer) for q in queries.tolist()])
    return (1 - best).clamp_min(0).view(-1, h, w)


class FewShotCalibrator(nn.Module):
    """Multi-level normal memory -> s_ctx and Lambda (Eq. 2).

    Args:
        extractor: frozen multi-level feature extractor.
        sharpness: beta in ``Lambda = sigmoid(beta * (s_ctx - 1))``.
        exclusion_radius: grid radius left out of the K = 1 normal scale.
        eps: floor of m_s (identical support images give m_s = 0).
    """

    def __init__(
        self, extractor: FeatureExtractor, sharpness: float = 4.0, exclusion_radius: int = 1, eps: float = 1e-6
    ) -> None:
        super().__init__()
        if sharpness <= 0:
            raise ValueError(f"fewshot.sharpness must be > 0, got {sharpness}")
        self.extractor = extractor
        self.sharpness = sharpness
        self.exclusion_radius = exclusion_radius
        self.eps = eps
        self._levels = 0
        self._k = 0
        self.support_side: int | None = None
        self.register_buffer("scales", None, persistent=False)  # (L,) m_s
        # (n_cal, S, S) s_ctx of the calibration images scored held out, and those images (n_cal, 3, S, S)
        self.register_buffer("held_out_s_ctx", None, persistent=False)
        self.register_buffer("calibration_images", None, persistent=False)

    @property
    def fitted(self) -> bool:
        return self.scales is not None

    @property
    def support_size(self) -> int:
        """K, the number of support images (0 before :meth:`fit`)."""
        return self._k

    @property
    def memory(self) -> list[torch.Tensor]:
        """Per level (K*h*w, C) L2-normalised support features (buffers, so ``.to()`` moves them)."""
        return [getattr(self, f"memory_{i}") for i in range(self._levels)]

    @torch.no_grad()
    def fit(self, support_images: torch.Tensor | Sequence) -> "FewShotCalibrator":
        """Build the memory from K normal images (K, 3, S, S) in [0, 1], and score the calibration
        images (:func:`calibration_indices`) held out: their s_ctx maps (n_cal, S, S) are
        ``held_out_s_ctx``, from which :mod:`samllava.coarse.verdict` derives the thresholds.

        ``support_images`` is a tensor, or any sequence whose slices are such tensors (e.g.
        :class:`samllava.data.ImageFiles`): it is read ``SUPPORT_CHUNK`` images at a time, so a large
        folder is never held in memory whole."""
        if isinstance(support_images, torch.Tensor):
            if support_images.ndim == 4 and support_images.shape[0] == 0:
                raise ValueError("few-shot support: no support images (K = 0); need K >= 1 normal images")
            check_images(support_images, "support_images")
        k = len(support_images)
        if k == 0:
            raise ValueError("few-shot support: no support images (K = 0); need K >= 1 normal images")
        self.clear()
        device = self.extractor.device
        levels = []  # per chunk, per level (k, h*w, C)
        for i in range(0, k, SUPPORT_CHUNK):
            chunk = support_images[i:i + SUPPORT_CHUNK].to(device)
            check_images(chunk, "support_images")
            maps = self.extractor(chunk)
            grids = [tuple(m.shape[-2:]) for m in maps]
            levels.append(patch_features(maps))
        feats = [torch.cat(level) for level in zip(*levels)]  # per level (K, h*w, C)
        del levels
        for i, f in enumerate(feats):
            self.register_buffer(f"memory_{i}", f.reshape(-1, f.shape[-1]), persistent=False)
        self._levels = len(feats)
        cal = calibration_indices(k, MAX_CALIBRATION_IMAGES)
        held = [held_out_distances(f, g, self.exclusion_radius, cal) for f, g in zip(feats, grids)]
        self.scales = torch.stack([d.median() for d in held]).clamp_min(self.eps)
        side = chunk.shape[-1]
        self.held_out_s_ctx = torch.stack([upsample(d, side) / sc for d, sc in zip(held, self.scales)]).mean(0)
        self.calibration_images = support_images[cal].to(device)
        self._k = k
        self.support_side = side
        return self

    def support_state(self) -> dict:
        """The fitted support (memory, scales, held-out maps, calibration images) as tensors and ints, for a
        cache on disk (:func:`samllava.diagnose.files.fit_support`): fitting a folder of hundreds costs seconds."""
        if not self.fitted:
            raise RuntimeError("FewShotCalibrator: nothing fitted to save")
        return {"memory": [m.cpu() for m in self.memory], "scales": self.scales.cpu(), "k": self._k,
                "side": self.support_side, "held_out_s_ctx": self.held_out_s_ctx.cpu(),
                "calibration_images": self.calibration_images.cpu()}

    def load_support_state(self, state: dict) -> "FewShotCalibrator":
        """Restore :meth:`support_state` (onto this module's device)."""
        self.clear()
        device = self.extractor.device
        for i, m in enumerate(state["memory"]):
            self.register_buffer(f"memory_{i}", m.to(device), persistent=False)
        self._levels, self._k, self.support_side = len(state["memory"]), int(state["k"]), int(state["side"])
        self.scales = state["scales"].to(device)
        self.held_out_s_ctx = state["held_out_s_ctx"].to(device)
        self.calibration_images = state["calibration_images"].to(device)
        return self

    def clear(self) -> None:
        """Forget the support set."""
        for i in range(self._levels):
            delattr(self, f"memory_{i}")
        self._levels, self._k, self.scales, self.support_side = 0, 0, None, None
        self.held_out_s_ctx = self.calibration_images = None

    def forward(self, images: torch.Tensor, maps: list[torch.Tensor] | None = None) -> CalibrationOutput:
        """s_ctx, Lambda and per-level distances for queries (B, 3, S, S) in [0, 1]; ``maps`` are the
        extractor's features of ``images`` when the caller computed them already (shared with another stage)."""
        if not self.fitted:
            raise RuntimeError("FewShotCalibrator: call fit(support_images) before forward")
        check_images(images)
        if images.shape[-1] != self.support_side:
            raise ValueError(f"query images are {images.shape[-1]} px but the support set was {self.support_side} px; "
                             "resize both to the same side")
        maps = self.extractor(images) if maps is None else maps
        distances = level_distances(maps, self.memory, images.shape[-1])
        s_ctx = torch.stack([d / s for d, s in zip(distances, self.scales)]).mean(0)  # (B, S, S)
        lam, log_lam = modulation(s_ctx, self.sharpness)
        return CalibrationOutput(s_ctx, lam, log_lam, distances)


def level_distances(maps: list[torch.Tensor], memory: list[torch.Tensor], side: int) -> list[torch.Tensor]:
    """Per level d_s (B, side, side) of query maps [(B, C, h, w)] against memories [(M, C)]."""
    return [upsample(min_cosine_distance(q, mem).view(m.shape[0], *m.shape[-2:]), side)
            for q, mem, m in zip(patch_features(maps), memory, maps)]


def knn_memory(extractor: FeatureExtractor, support: torch.Tensor) -> list[torch.Tensor]:
    """The k-NN baseline's memory: per level all support patch features (M, C), normalised."""
    check_images(support, "support")
    return [f.reshape(-1, f.shape[-1]) for f in patch_features(extractor(support))]


def knn_map(extractor: FeatureExtractor, memory: list[torch.Tensor], query: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (B, S, S) = mean over levels of ``1 - max cos`` to ``memory``; scores (B,) = map maxima."""
    check_images(query, "query")
    maps = torch.stack(level_distances(extractor(query), memory, query.shape[-1])).mean(0)
    return maps, maps.flatten(1).amax(1)


def knn_anomaly_map(extractor: FeatureExtractor, support: torch.Tensor, query: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PatchCore-style k-NN (k = 1) baseline on the same backbone, without Lambda or CLIP.

    Args:
        extractor: the few-shot backbone.
        support: (K, 3, S, S) normal images in [0, 1].
        query: (B, 3, S, S) in [0, 1], same S.

    Returns:
        maps (B, S, S): mean over levels of ``1 - max cos`` to the full memory (no subsampling);
        scores (B,): the map maximum. For many query batches, build :func:`knn_memory` once and
        call :func:`knn_map`.
    """
    check_images(support, "support")
    check_images(query, "query")
    if support.shape[-1] != query.shape[-1]:
        raise ValueError(f"query images are {query.shape[-1]} px but the support set is {support.shape[-1]} px")
    return knn_map(extractor, knn_memory(extractor, support), query)
