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
from samllava.coarse.nearest import held_out_distances, max_similarity, min_cosine_distance, patch_features


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


def calibration_scores(held: list[torch.Tensor], calibration: list[torch.Tensor], queries: list[torch.Tensor],
                       scales: torch.Tensor, side: int, term: torch.Tensor | None = None) -> torch.Tensor:
    """Each calibration image's score with each query image added to its memory (full conformal).

    A support image held out is scored against the other K - 1 images; a query is scored against all K.
    Adding the query to the held-out image's memory makes the two scored alike (each against K images of
    the same kind): a patch's distance becomes the smaller of its held-out distance and its distance to the
    query's patches.

    Args:
        held: per level (n, h, w), the calibration images' held-out distances on the patch grid.
        calibration: per level (n, h*w, C), their L2-normalised patch features.
        queries: per level (B, h*w, C), the queries' L2-normalised patch features.
        scales: (L,) m_s. side: the maps' side S.
        term: (n, S, S) added to each calibration map (the decision map's zero-shot term), or None.

    Returns:
        (n, B): the maximum of each calibration image's map with query b in its memory.
    """
    n, b = held[0].shape[0], queries[0].shape[0]
    out = held[0].new_empty(n, b)
    for j in range(b):
        levels = []
        for d, cal, q, sc in zip(held, calibration, queries, scales):
            to_query = 1 - max_similarity(cal.reshape(-1, cal.shape[-1]), q[j].t())  # (n*h*w,)
            levels.append(upsample(torch.minimum(d, to_query.clamp_min(0).view_as(d)), side) / sc)
        maps = torch.stack(levels).mean(0)
        out[:, j] = (maps if term is None else maps + term).flatten(1).amax(1)
    return out


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
        # the support images scored held out ((n_cal,) indices), or None when the calibration normals are
        # other images than the support's (scored against the whole memory, as test images are)
        self.register_buffer("calibration_index", None, persistent=False)
        self.held_out_grids: list[torch.Tensor] | None = None  # per level (n_cal, h, w) held-out distances

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

    @property
    def left_out_calibration(self) -> bool:
        """True when the calibration normals are support images scored leave-one-out (no other normals given)."""
        return self.calibration_index is not None

    @torch.no_grad()
    def fit(self, support_images: torch.Tensor | Sequence, calibration: torch.Tensor | Sequence | None = None
            ) -> "FewShotCalibrator":
        """Build the memory from K normal images (K, 3, S, S) in [0, 1], and score the calibration normals
        held out: their s_ctx maps (n_cal, S, S) are ``held_out_s_ctx``, from which
        :mod:`samllava.coarse.verdict` derives the thresholds.

        The calibration normals are ``calibration`` (other normal images, scored against the whole memory
        exactly as test images are) when given, else the support images themselves
        (:func:`calibration_indices`), each scored against the memory without it.

        Image sets are tensors, or any sequence whose slices are such tensors (e.g.
        :class:`samllava.data.ImageFiles`): read ``SUPPORT_CHUNK`` images at a time, so a large folder is
        never held in memory whole."""
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
        self.scales = torch.stack([d.median() for d in held]).clamp_min(self.eps)  # m_s: always leave-one-out
        side = chunk.shape[-1]
        self._k, self.support_side = k, side
        if calibration is None or len(calibration) == 0:
            self.held_out_s_ctx = torch.stack([upsample(d, side) / sc for d, sc in zip(held, self.scales)]).mean(0)
            self.calibration_images = support_images[cal].to(device)
            self.calibration_index = cal.to(device)
            self.held_out_grids = held
        else:
            self.held_out_s_ctx = torch.cat([self(calibration[i:i + SUPPORT_CHUNK].to(device)).s_ctx
                                             for i in range(0, len(calibration), SUPPORT_CHUNK)])
            self.calibration_images = calibration[:].to(device)
        return self

    def support_state(self) -> dict:
        """The fitted support (memory, scales, held-out maps, calibration images) as tensors and ints, for a
        cache on disk (:func:`samllava.diagnose.files.fit_support`): fitting a folder of hundreds costs seconds."""
        if not self.fitted:
            raise RuntimeError("FewShotCalibrator: nothing fitted to save")
        index = None if self.calibration_index is None else self.calibration_index.cpu()
        return {"memory": [m.cpu() for m in self.memory], "scales": self.scales.cpu(), "k": self._k,
                "side": self.support_side, "held_out_s_ctx": self.held_out_s_ctx.cpu(),
                "calibration_images": self.calibration_images.cpu(), "calibration_index": index,
                "held_out_grids": None if index is None else [d.cpu() for d in self.held_out_grids]}

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
        index = state["calibration_index"]
        self.calibration_index = None if index is None else index.to(device)
        self.held_out_grids = None if index is None else [d.to(device) for d in state["held_out_grids"]]
        return self

    def clear(self) -> None:
        """Forget the support set."""
        for i in range(self._levels):
            delattr(self, f"memory_{i}")
        self._levels, self._k, self.scales, self.support_side = 0, 0, None, None
        self.held_out_s_ctx = self.calibration_images = self.calibration_index = self.held_out_grids = None

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

    def scores_with(self, images: torch.Tensor, maps: list[torch.Tensor] | None = None,
                    term: torch.Tensor | None = None) -> torch.Tensor:
        """(n_cal, B): each held-out support image's score with each query of (B, 3, S, S) in its memory
        (:func:`calibration_scores`), the calibration of the leave-one-out verdict. ``term`` (n_cal, S, S)
        is added to the calibration images' maps (the decision map's zero-shot term)."""
        if not self.left_out_calibration:
            raise ValueError("scores_with: the calibration normals are not support images held out")
        maps = self.extractor(images) if maps is None else maps
        index = self.calibration_index.to(self.memory[0].device)
        cal = [m.view(self._k, -1, m.shape[-1])[index] for m in self.memory]
        return calibration_scores(self.held_out_grids, cal, patch_features(maps), self.scales, images.shape[-1],
                                  term)


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
