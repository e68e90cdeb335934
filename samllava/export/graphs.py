"""The detection part of a diagnosis as two torch modules that trace to ONNX (docs/export.md).

* :class:`DetectGraph`: images (B, 3, S, S) in [0, 1] -> the decision map (B, S, S) (s_ctx, plus CLIP's
  term ``log H / beta`` where the profile's zero-shot term is active), the image score (B,) (its maximum),
  the SAM image embedding (B, C', g, g) and, for the leave-one-out verdict, the support images' scores with
  each test image in their memory (B, n). The support's memory is a constant of the graph.
* :class:`FineGraph`: (embedding, M'_coarse) -> the logits of SAM's kept mask (B, S, S).

The verdict and the hysteresis mask M'_coarse run between the two in numpy
(:mod:`samllava.export.numpy_steps`): hysteresis is a connected-components search, which ONNX has no
operator for, and the verdict is a comparison with numbers of the export's JSON.

Every nearest-neighbour search is a product against a constant memory in column chunks of at most
:data:`CHUNK` patches with a running maximum, as :mod:`samllava.coarse.nearest` tiles it in torch: the
largest intermediate of the graph stays (B, patches, CHUNK) whatever the support's size.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from samllava.coarse.memory import upsample
from samllava.coarse.nearest import patch_features
from samllava.coarse.stage import CoarseLocalizer
from samllava.coarse.zero_shot import ZeroShotLocalizer
from samllava.sam.cascade import SamCascade

CHUNK = 4096  # memory patches per product in the graph


def nearest_distance(query: torch.Tensor, memory: list[torch.Tensor]) -> torch.Tensor:
    """``1 - max cos`` of each query patch to a memory given in chunks.

    Args:
        query: (B, N, C) L2-normalised patch features.
        memory: chunks (M_i, C) of the L2-normalised memory.

    Returns:
        (B, N) distances in [0, 2] (:func:`samllava.coarse.nearest.min_cosine_distance`).
    """
    best = None
    for chunk in memory:
        sim = (query @ chunk.t()).amax(-1)  # (B, N)
        best = sim if best is None else torch.maximum(best, sim)
    return (1 - best).clamp_min(0)


def chunks(rows: torch.Tensor, size: int = CHUNK) -> list[torch.Tensor]:
    """(M, C) -> consecutive (<= size, C) pieces (contiguous copies: each is one constant of the graph)."""
    return [c.contiguous() for c in rows.split(size)]


class GaussianBlur(nn.Module):
    """:func:`samllava.coarse.zero_shot.gaussian_blur_maps` with its kernel a constant: (B, S, S) -> (B, S, S).

    torchvision's blur builds its kernel from the input's traced shape, which the ONNX exporter cannot size;
    this is the same kernel (torchvision's sampled Gaussian, normalised) and the same reflect padding."""

    def __init__(self, sigma: float, side: int) -> None:
        super().__init__()
        k = min(2 * math.ceil(3 * sigma) + 1, 2 * side - 1)  # as gaussian_blur_maps
        x = torch.linspace(-(k - 1) * 0.5, (k - 1) * 0.5, steps=k)
        pdf = torch.exp(-0.5 * (x / sigma).pow(2))
        line = pdf / pdf.sum()
        self.register_buffer("kernel", torch.mm(line[:, None], line[None, :])[None, None], persistent=False)
        self.pad = k // 2

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        p = self.pad
        return F.conv2d(F.pad(maps[:, None], (p, p, p, p), mode="reflect"), self.kernel)[:, 0]


class LeaveOneOut(nn.Module):
    """The calibration of the leave-one-out verdict (:func:`samllava.coarse.memory.calibration_scores`).

    Args:
        held: per level (n, h, w), the calibration images' held-out distances.
        features: per level (n, h*w, C), their L2-normalised patch features.
        scales: (L,) m_s. side: S.
        term: (n, S, S), the decision map's zero-shot term of the calibration images, or None.
        per_product: calibration images per product (bounds the intermediate (B, per_product*h*w, h*w)).
    """

    def __init__(self, held: list[torch.Tensor], features: list[torch.Tensor], scales: torch.Tensor, side: int,
                 term: torch.Tensor | None = None, per_product: int = 4) -> None:
        super().__init__()
        self.side = side
        for i, (d, f) in enumerate(zip(held, features)):
            self.register_buffer(f"held_{i}", d.float().contiguous(), persistent=False)
            for j, part in enumerate(f.float().split(per_product)):
                self.register_buffer(f"features_{i}_{j}", part.contiguous(), persistent=False)
        self.parts = [len(f.split(per_product)) for f in features]
        self.register_buffer("scales", scales.float(), persistent=False)
        self.register_buffer("term", None if term is None else term.float().contiguous(), persistent=False)

    def forward(self, queries: list[torch.Tensor]) -> torch.Tensor:
        """Queries' patch features per level (B, h*w, C) -> (B, n): each calibration image's score with that
        query in its memory."""
        levels = []
        for i, q in enumerate(queries):
            held = getattr(self, f"held_{i}")  # (n, h, w)
            to_query = torch.cat([self._to_query(q, i, j) for j in range(self.parts[i])], 1)  # (B, n, h*w)
            d = torch.minimum(held[None], to_query.view(q.shape[0], *held.shape))  # (B, n, h, w)
            up = upsample(d.flatten(0, 1), self.side) / self.scales[i]
            levels.append(up.view(q.shape[0], held.shape[0], self.side, self.side))
        maps = torch.stack(levels).mean(0)  # (B, n, S, S)
        if self.term is not None:
            maps = maps + self.term[None]
        return maps.flatten(2).amax(2)

    def _to_query(self, q: torch.Tensor, level: int, part: int) -> torch.Tensor:
        """(B, n_part, h*w): the part's calibration patches' distance to their nearest query patch."""
        feats = getattr(self, f"features_{level}_{part}")  # (n_part, h*w, C)
        sim = (feats.flatten(0, 1) @ q.transpose(1, 2)).amax(-1)  # (B, n_part*h*w)
        return (1 - sim).clamp_min(0).view(q.shape[0], feats.shape[0], feats.shape[1])


class DetectGraph(nn.Module):
    """Images (B, 3, S, S) in [0, 1] -> decision map, score, SAM embedding (and leave-one-out calibration).

    Args:
        coarse: the fitted coarse stage (its few-shot backbone, CLIP and sharpness are used; its memory is not).
        cascade: the SAM cascade (its frozen image encoder, or the backbone standing in for it).
        memory: per level (M_l, C_l) L2-normalised support patches (the full memory or its coreset).
        scales: (L,) m_s. side: S.
        text_feats: (2, D) CLIP state features of the category where the zero-shot term is active, else None.
        leave_one_out: the verdict's calibration, or None for the other rules.
    """

    def __init__(self, *, coarse: CoarseLocalizer, cascade: SamCascade, memory: list[torch.Tensor],
                 scales: torch.Tensor, side: int, text_feats: torch.Tensor | None = None,
                 leave_one_out: LeaveOneOut | None = None) -> None:
        super().__init__()
        self.extractor = coarse.calibrator.extractor
        self.zero_shot = self.blur = None
        if text_feats is not None:  # CLIP's map unblurred (same weights), then the blur as a constant kernel
            zs = coarse.zero_shot
            self.zero_shot = ZeroShotLocalizer(zs.model, zs.tokenizer, dataclasses.replace(zs.cfg, blur_sigma=0.0))
            self.blur = GaussianBlur(zs.cfg.blur_sigma, side) if zs.cfg.blur_sigma > 0 else None
        self.sharpness = coarse.calibrator.sharpness
        self.cascade = cascade
        self.side = side
        self.parts = []
        for i, level in enumerate(memory):
            pieces = chunks(level.float())
            self.parts.append(len(pieces))
            for j, piece in enumerate(pieces):
                self.register_buffer(f"memory_{i}_{j}", piece, persistent=False)
        self.register_buffer("scales", scales.float(), persistent=False)
        self.register_buffer("text_feats", None if text_feats is None else text_feats.float(), persistent=False)
        self.leave_one_out = leave_one_out

    def memory(self, level: int) -> list[torch.Tensor]:
        """The memory of ``level`` as its chunks [(<= CHUNK, C_l)]."""
        return [getattr(self, f"memory_{level}_{j}") for j in range(self.parts[level])]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, S, S) in [0, 1] -> decision (B, S, S), score (B,), embedding (B, C', g, g)[, calibration (B, n)]."""
        maps = self.extractor(images)  # per level (B, C_l, h_l, w_l)
        queries = patch_features(maps)  # per level (B, h*w, C)
        b = images.shape[0]
        # s_ctx (Eq. 2's context score): per level d_s / m_s at the image side, averaged over levels
        levels = [upsample(nearest_distance(q, self.memory(i)).view(b, *m.shape[-2:]), self.side) / self.scales[i]
                  for i, (q, m) in enumerate(zip(queries, maps))]
        decision = torch.stack(levels).mean(0)  # (B, S, S)
        if self.zero_shot is not None:  # CoarseLocalizer.decision_map: s_ctx + log(H) / beta
            heatmap, _ = self.zero_shot(images, self.text_feats)
            heatmap = heatmap if self.blur is None else self.blur(heatmap)
            decision = decision + torch.log(heatmap.clamp_min(1e-30)) / self.sharpness
        score = decision.flatten(1).amax(1)
        encoder = self.cascade.encoder
        embedding = encoder.from_maps(maps) if encoder is not None else self.cascade.embed(images)
        if self.leave_one_out is None:
            return decision, score, embedding
        return decision, score, embedding, self.leave_one_out(queries)


class FineGraph(nn.Module):
    """(B, C', g, g) SAM image embeddings and (B, S, S) M'_coarse (0/1) -> (B, S, S) logits of SAM's kept mask
    (:meth:`samllava.sam.cascade.SamCascade.forward`; M_fine is logits > 0 before the gate)."""

    def __init__(self, cascade: SamCascade, side: int) -> None:
        super().__init__()
        self.cascade = cascade
        self.side = side

    def forward(self, embedding: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return self.cascade(embedding, coarse > 0.5, self.side).logits
