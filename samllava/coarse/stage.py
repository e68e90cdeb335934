"""Stage 1, coarse localisation (Sec. 3.1, Eq. 1-2): zero-shot CLIP map, few-shot calibration, the verdict.

Which map is used:

* no support set: H (zero-shot CLIP); score = the zero-shot image score; M_coarse = Otsu of H (Eq. 1).
* support set and ``use_zero_shot``: H' = H * Lambda (Eq. 2); the *decision map* is its odds form
  s_ctx + log(H) / beta (:meth:`CoarseLocalizer.decision_map`).
* support set and not ``use_zero_shot`` (profiles whose CLIP has random weights): the zero-shot
  term is inactive, H := 1, so H' = Lambda; the decision map is s_ctx itself (Lambda is a monotone
  function of it that saturates at 1 in float32, which would tie clear defects).

With a support set the image score is the maximum of the decision map (PatchCore and WinCLIP+ score
few-shot images by their map maximum), and the paper's "H' is thresholded" is made a *verdict*
calibrated on the support's normal images alone (:mod:`samllava.coarse.verdict`): an image is judged
defective when its score exceeds the image threshold, and M'_coarse is the hysteresis mask between
the pixel and image thresholds, so it is non-empty exactly on the images judged defective, around
their highest-scoring region. Per-image Otsu alone splits every map in two, normal images included.
``CoarseOutput.terms`` says in words which terms ran and which thresholds, so every table can state it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn

from samllava.assets import weights
from samllava.core.config import Profile
from samllava.core.seeding import seeded
from samllava.coarse.backbone import build_feature_extractor
from samllava.coarse.clip_model import build_clip
from samllava.coarse.memory import FewShotCalibrator, knn_anomaly_map
from samllava.coarse.otsu import otsu_masks
from samllava.coarse.verdict import Verdict, calibrate, verdict_masks
from samllava.coarse.zero_shot import ZeroShotLocalizer

__all__ = ["CoarseOutput", "CoarseLocalizer", "build_coarse", "knn_anomaly_map"]


@dataclass
class CoarseOutput:
    heatmap: torch.Tensor | None  # (B, S, S) zero-shot H in [0, 1]; None when the term is inactive
    lam: torch.Tensor | None  # (B, S, S) Lambda in (0, 1); None without a support set
    calibrated: torch.Tensor  # (B, S, S) the map used: H' (Eq. 2), Lambda, or H
    mask: torch.Tensor  # (B, S, S) bool: M'_coarse (the verdict's hysteresis mask), or Otsu of H (Eq. 1) zero-shot
    log_map: torch.Tensor  # (B, S, S) log of ``calibrated``, computed without float32 saturation
    score: torch.Tensor  # (B,) image anomaly score: the maximum of the decision map
    defective: torch.Tensor | None  # (B,) bool verdict (score > verdict.image); None without a support set
    terms: dict[str, str]  # {"zero_shot": "active: ...", "few_shot": "inactive: ...", "verdict": ...}
    verdict: Verdict | None = None  # the thresholds behind ``defective`` and ``mask`` (shared by the batch)

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
    """``fn(value)`` for a per-image tensor field; ``terms``, ``verdict`` and absent (None) terms pass unchanged."""
    return value if name in ("terms", "verdict") or value is None else fn(value)


class CoarseLocalizer(nn.Module):
    """Zero-shot localizer plus an optional few-shot calibrator.

    Args:
        zero_shot: the CLIP heatmap module.
        calibrator: the few-shot memory, or None (zero-shot only).
        use_zero_shot: False makes H inactive once a support set is given (H := 1).
        clip_label: how CLIP's weights were obtained, for ``terms`` (e.g. "random weights").
    """

    def __init__(self, *, zero_shot: ZeroShotLocalizer, calibrator: FewShotCalibrator | None = None,
                 use_zero_shot: bool = True, clip_label: str = "", target_fpr: float = 0.2) -> None:
        super().__init__()
        self.zero_shot = zero_shot
        self.calibrator = calibrator
        self.use_zero_shot = use_zero_shot
        self.clip_label = clip_label or "CLIP"
        self.target_fpr = target_fpr
        # (text features it was made with, verdict, the calibration images' zero-shot term or None)
        self._verdict: tuple[torch.Tensor | None, Verdict, torch.Tensor | None] | None = None

    @property
    def has_support(self) -> bool:
        return self.calibrator is not None and self.calibrator.fitted

    def set_support(self, images: torch.Tensor | Sequence, calibration: torch.Tensor | Sequence | None = None
                    ) -> None:
        """Fit the few-shot memory on K normal images (K, 3, S, S) in [0, 1] (or a sequence of them read in
        chunks, :meth:`FewShotCalibrator.fit`); ``calibration``: other normal images that calibrate the
        verdict (default: the support images, left out one at a time)."""
        if self.calibrator is None:
            raise ValueError("this CoarseLocalizer has no few-shot calibrator; build it with one to set a support set")
        self.calibrator.fit(images, calibration)
        self._verdict = None

    def set_support_state(self, state: dict) -> None:
        """A support fitted earlier (:meth:`FewShotCalibrator.support_state`, e.g. read from a cache)."""
        self.calibrator.load_support_state(state)
        self._verdict = None

    def clear_support(self) -> None:
        """Back to zero-shot."""
        if self.calibrator is not None:
            self.calibrator.clear()
        self._verdict = None

    def decision_map(self, heatmap: torch.Tensor | None, s_ctx: torch.Tensor) -> torch.Tensor:
        """The map the verdict judges and the score maximises (B, S, S): ``D = s_ctx + log(H) / beta``.

        ``beta (D - 1) = log H + logit Lambda`` is Eq. 2's H' = H * Lambda in odds form: it ranks pixels
        like H' wherever Lambda is not saturated, and keeps ranking where Lambda rounds to 1 (log H'
        is bounded by log H there, which no threshold extrapolated from normal images respects).
        With the zero-shot term inactive (H := 1) it is s_ctx itself.
        """
        if heatmap is None:
            return s_ctx
        return s_ctx + torch.log(heatmap.clamp_min(1e-30)) / self.calibrator.sharpness

    def verdict(self, text_feats: torch.Tensor | None = None) -> Verdict:
        """The support's thresholds (cached; with the zero-shot term active they depend on the category's
        text features, which score the calibration images' H)."""
        if not self.has_support:
            raise ValueError("the verdict needs a support set of normal images (set_support)")
        key = text_feats if self.zero_shot_active() else None
        if self._verdict is None or self._verdict[0] is not key:
            cal = self.calibrator
            heatmap = self.zero_shot(cal.calibration_images, text_feats)[0] if key is not None else None
            term = None if heatmap is None else self.decision_map(heatmap, torch.zeros_like(heatmap))
            verdict = calibrate(self.decision_map(heatmap, cal.held_out_s_ctx), self.target_fpr,
                                left_out=cal.left_out_calibration)
            self._verdict = (key, verdict, term)
        return self._verdict[1]

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

    def forward_features(self, images: torch.Tensor, text_feats: torch.Tensor | None = None,
                         maps: list[torch.Tensor] | None = None) -> CoarseOutput:
        """:meth:`forward` with the few-shot backbone's features ``maps`` of ``images`` already computed."""
        return self._forward(images, text_feats, maps)

    def forward(self, images: torch.Tensor, text_feats: torch.Tensor | None = None) -> CoarseOutput:
        """Coarse map, mask, score and verdict of images (B, 3, S, S) in [0, 1].

        ``text_feats`` (2, D) is needed whenever the zero-shot term is active.
        """
        return self._forward(images, text_feats, None)

    def _forward(self, images: torch.Tensor, text_feats: torch.Tensor | None, maps: list[torch.Tensor] | None
                 ) -> CoarseOutput:
        heatmap = lam = zs_score = defective = verdict = None
        if self.zero_shot_active():
            if text_feats is None:
                raise ValueError("text_feats (2, D) are required: the zero-shot term is active (see TextCache)")
            heatmap, zs_score = self.zero_shot(images, text_feats)
        terms = self.terms()
        if self.has_support:
            verdict = self.verdict(text_feats)
            maps = self.calibrator.extractor(images) if maps is None else maps
            cal = self.calibrator(images, maps)
            lam = cal.lam
            calibrated, log_map = calibrated_map(heatmap, cal.log_lam)  # Eq. 2 (H := 1 when inactive)
            decision = self.decision_map(heatmap, cal.s_ctx)
            score = decision.flatten(1).amax(1)
            calibration = (self.calibrator.scores_with(images, maps, self._verdict[2])
                           if verdict.rule == "leave-one-out" else None)
            defective, mask = verdict_masks(decision, verdict, calibration)
            terms["verdict"] = verdict.describe()
        else:
            calibrated, score = heatmap, zs_score
            log_map = torch.log(heatmap.clamp_min(1e-30))
            mask = otsu_masks(calibrated)  # Eq. 1: no normal images, no calibrated threshold
        return CoarseOutput(heatmap=heatmap, lam=lam, calibrated=calibrated, mask=mask, score=score,
                            defective=defective, terms=terms, log_map=log_map, verdict=verdict)


def calibrated_map(heatmap: torch.Tensor | None, log_lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: ``H' = H * Lambda`` (B, S, S), computed in log space (``log H' = log H + log Lambda``, see
    :func:`samllava.coarse.memory.modulation`), returned with its log; ``heatmap`` None is the inactive
    zero-shot term (H := 1, so H' = Lambda)."""
    log_map = log_lam
    if heatmap is not None:
        log_map = log_map + torch.log(heatmap.clamp_min(1e-30))
    return log_map.exp(), log_map


def build_coarse(profile: Profile, seed: int = 0) -> tuple[CoarseLocalizer, Callable]:
    """The coarse stage of ``profile`` (weights resolved through :mod:`samllava.assets.weights`) and CLIP's tokenizer.

    Random weights (where the profile allows them) are drawn from ``seed`` (see :mod:`samllava.core.seeding`).
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
        target_fpr=fs.target_fpr,
    )
    return localizer, tokenizer
