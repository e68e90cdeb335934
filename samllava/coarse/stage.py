"""Stage 1, coarse localisation (Sec. 3.1, Eq. 1-2): zero-shot CLIP map, few-shot calibration, Otsu.

Which map is used:

* no support set: H (zero-shot CLIP); score = the zero-shot image score.
* support set and ``use_zero_shot``: H' = H * Lambda (Eq. 2); score = max of H'.
* support set and not ``use_zero_shot`` (profiles whose CLIP has random weights): the zero-shot
  term is inactive, H := 1, so H' = Lambda; score = max of Lambda.

With a support set the score is the maximum of the map actually used (the map is already the
product of both cues, and PatchCore/WinCLIP+ score few-shot images by their map maximum),
taken in log space (``log_map``) so that saturated values of Lambda do not tie. The coarse mask is
Otsu's binarisation of that map (Eq. 1); with a support set it keeps only pixels whose context score
s_ctx exceeds the largest held-out s_ctx of the support images themselves: the paper says H' "is
thresholded", and per-image Otsu alone splits every map in two, normal images included (half of each
image here), while this floor comes from the K normal shots, with nothing tuned. ``CoarseOutput.terms`` says in words
which terms ran and why, so every table can state it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn

from .. import weights
from ..config import Profile
from ..seeding import seeded
from .backbone import build_feature_extractor
from .clip_model import build_clip
from .memory import FewShotCalibrator, knn_anomaly_map
from .otsu import otsu_masks
from .zero_shot import ZeroShotLocalizer

__all__ = ["CoarseOutput", "CoarseLocalizer", "build_coarse", "knn_anomaly_map"]


@dataclass
class CoarseOutput:
    heatmap: torch.Tensor | None  # (B, S, S) zero-shot H in [0, 1]; None when the term is inactive
    lam: torch.Tensor | None  # (B, S, S) Lambda in (0, 1); None without a support set
    calibrated: torch.Tensor  # (B, S, S) the map used: H' (Eq. 2), Lambda, or H
    mask: torch.Tensor  # (B, S, S) bool, Otsu of ``calibrated`` (Eq. 1)
    log_map: torch.Tensor  # (B, S, S) log of ``calibrated``, computed without float32 saturation
    score: torch.Tensor  # (B,) image anomaly score
    terms: dict[str, str]  # {"zero_shot": "active: ...", "few_shot": "inactive: ..."}

    def select(self, idx: torch.Tensor | slice) -> "CoarseOutput":
        """The outputs of the images ``idx`` (``terms`` are shared by the batch)."""
        return CoarseOutput(**{f.name: _pick(getattr(self, f.name), f.name, lambda t: t[idx]) for f in fields(self)})

    @staticmethod
    def cat(outputs: list["CoarseOutput"]) -> "CoarseOutput":
        """Several batches' outputs as one (``terms`` of the first)."""
        def joined(name: str):
            return _pick(getattr(outputs[0], name), name, lambda _: torch.cat([getattr(o, name) for o in outputs]))

        return CoarseOutput(**{f.name: joined(f.name) for f in fields(CoarseOutput)})


def _pick(value, name: str, fn: Callable):
    """``fn(value)`` for a per-image tensor field; ``terms`` and absent (None) terms pass unchanged."""
    return value if name == "terms" or value is None else fn(value)


class CoarseLocalizer(nn.Module):
    """Zero-shot localizer plus an optional few-shot calibrator.

    Args:
        zero_shot: the CLIP heatmap module.
        calibrator: the few-shot memory, or None (zero-shot only).
        use_zero_shot: False makes H inactive once a support set is given (H := 1).
        clip_label: how CLIP's weights were obtained, for ``terms`` (e.g. "random weights").
    """

    def __init__(self, *, zero_shot: ZeroShotLocalizer, calibrator: FewShotCalibrator | None = None,
                 use_zero_shot: bool = True, clip_label: str = "") -> None:
        super().__init__()
        self.zero_shot = zero_shot
        self.calibrator = calibrator
        self.use_zero_shot = use_zero_shot
        self.clip_label = clip_label or "CLIP"

    @property
    def has_support(self) -> bool:
        return self.calibrator is not None and self.calibrator.fitted

    def set_support(self, images: torch.Tensor) -> None:
        """Fit the few-shot memory on K normal images (K, 3, S, S) in [0, 1]."""
        if self.calibrator is None:
            raise ValueError("this CoarseLocalizer has no few-shot calibrator; build it with one to set a support set")
        self.calibrator.fit(images)

    def clear_support(self) -> None:
        """Back to zero-shot."""
        if self.calibrator is not None:
            self.calibrator.clear()

    def zero_shot_active(self) -> bool:
        return not self.has_support or self.use_zero_shot

    def terms(self) -> dict[str, str]:
        """Which terms are active and why, in words."""
        if not self.has_support:
            zs = f"active: no support set, zero-shot only ({self.clip_label})"
            fs = "inactive: no support set"
        else:
            k, label = self.calibrator.support_size, self.calibrator.extractor.label
            fs = f"active: {label}, K={k}"
            zs = (f"active: H' = H * Lambda ({self.clip_label})" if self.use_zero_shot
                  else f"inactive: use_zero_shot=false, H := 1 ({self.clip_label})")
        return {"zero_shot": zs, "few_shot": fs}

    def forward(self, images: torch.Tensor, text_feats: torch.Tensor | None = None) -> CoarseOutput:
        """Coarse map, mask and score of images (B, 3, S, S) in [0, 1].

        ``text_feats`` (2, D) is needed whenever the zero-shot term is active.
        """
        heatmap = lam = None
        zs_score = None
        floor = None
        if self.zero_shot_active():
            if text_feats is None:
                raise ValueError("text_feats (2, D) are required: the zero-shot term is active (see TextCache)")
            heatmap, zs_score = self.zero_shot(images, text_feats)
        if self.has_support:
            cal = self.calibrator(images)
            lam = cal.lam
            calibrated, log_map = calibrated_map(heatmap, cal.log_lam)  # Eq. 2 (H := 1 when inactive)
            score = log_map.flatten(1).amax(1)  # max of H', ranked in log space
            floor = cal.s_ctx > self.calibrator.support_s_max
        else:
            calibrated, score = heatmap, zs_score
            log_map = torch.log(heatmap.clamp_min(1e-30))
        mask = otsu_masks(calibrated)
        if floor is not None:
            mask = mask & floor
        return CoarseOutput(heatmap=heatmap, lam=lam, calibrated=calibrated, mask=mask,
                            score=score, terms=self.terms(), log_map=log_map)


def calibrated_map(heatmap: torch.Tensor | None, log_lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: ``H' = H * Lambda`` (B, S, S), computed in log space (``log H' = log H + log Lambda``, see
    :func:`samllava.coarse.memory.modulation`), returned with its log; ``heatmap`` None is the inactive
    zero-shot term (H := 1, so H' = Lambda)."""
    log_map = log_lam
    if heatmap is not None:
        log_map = log_map + torch.log(heatmap.clamp_min(1e-30))
    return log_map.exp(), log_map


def build_coarse(profile: Profile, seed: int = 0) -> tuple[CoarseLocalizer, Callable]:
    """The coarse stage of ``profile`` (weights resolved through :mod:`samllava.weights`) and CLIP's tokenizer.

    Random weights (where the profile allows them) are drawn from ``seed`` (see :mod:`samllava.seeding`).
    """
    clip_path = weights.require(profile, "clip", profile.clip.weights)
    with seeded(seed, "clip"):
        clip_model, tokenizer = build_clip(profile.clip, clip_path)
    clip_label = f"CLIP {profile.clip.model_name}, " + (
        f"weights {profile.clip.weights}" if clip_path else "random weights"
    )
    fs = profile.fewshot
    if fs.backbone == "clip" and fs.image_size != profile.clip.image_size:
        raise ValueError(f"fewshot.image_size {fs.image_size} must equal clip.image_size {profile.clip.image_size} "
                         "for the 'clip' backbone (one CLIP tower serves both)")
    fs_path = weights.require(profile, "fewshot", fs.weights) if fs.backbone == "timm" else None
    with seeded(seed, "fewshot"):
        extractor = build_feature_extractor(fs, clip_model.visual, fs_path)
    localizer = CoarseLocalizer(
        zero_shot=ZeroShotLocalizer(clip_model, tokenizer, profile.clip),
        calibrator=FewShotCalibrator(extractor, sharpness=fs.sharpness),
        use_zero_shot=fs.use_zero_shot,
        clip_label=clip_label,
    )
    return localizer, tokenizer
