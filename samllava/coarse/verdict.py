"""The verdict: image and pixel thresholds calibrated on normal images only, never on a test label.

The paper thresholds H' to get M'_coarse but says nothing about how a single image is judged normal
or defective. Here an image is defective when its score (the maximum of its decision map) is unusually
high *for a normal image scored the same way*. "Unusually" is a conformal p-value against n
calibration normals with scores c_1 .. c_n:

    p(x) = (1 + #{i : c_i >= s(x)}) / (n + 1),        defective  <=>  p(x) <= target_fpr,

where s(x) is the test image's score. When the test image and the calibration normals are exchangeable
(drawn alike and scored alike), a normal test image is judged defective with probability at most
``target_fpr``, and close to it (conformal prediction). Which normals calibrate, best first
(:func:`calibrate` picks the rule, reported in every table and report):

* ``"calibration set"``: normal images that are not in the memory (``--calibration``; evaluation's
  train/good images beyond the K shots), scored against the whole memory exactly as test images are.
  The rule is then a threshold, the :func:`conformal_quantile` of their scores.
* ``"leave-one-out"``: the support images themselves, each held out of the memory and scored against the
  other K - 1 images *and the test image* (full conformal: :func:`samllava.coarse.memory.calibration_scores`),
  as the test image is scored against all K. Every image of the K + 1 is then scored against K others of
  the same kind, and a normal test image is the highest of them with probability 1 / (K + 1). Held-out
  scores against K - 1 images alone sit higher than a normal test image's (a larger memory lowers every
  score), which made the earlier rule flag almost no normal image on real photographs (docs/verdict.md).
* ``"gumbel"``: with so few normals that no p-value reaches the target ((n + 1) target < 1: K = 1-3
  at 20 %), a model. The image score is a maximum over ``blocks**2`` blocks; block maxima of the
  held-out maps fit a Gumbel law whose maximum over ``blocks**2`` blocks is again Gumbel
  (:func:`gumbel_quantile`). No guarantee: with n normals no rule can promise a rate below 1 / (n + 1).

The **pixel threshold** ``tau_pix`` is the 99th percentile of the calibration normals' pixels:
M'_coarse is every pixel above it connected to the image's highest pixels (hysteresis), so an image
judged defective always has a non-empty mask on its highest-scoring region and a normal one none.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from skimage.filters import apply_hysteresis_threshold

EULER_GAMMA = 0.5772156649015329
# Held-out pixels sampled for the pixel quantile: torch.quantile refuses inputs over 2**24 elements,
# and a strided subsample of a few hundred thousand pixels fixes a 99th percentile to a fraction of a percent.
PIXEL_SAMPLE = 2**18
RULES = ("calibration set", "leave-one-out", "gumbel")
_HOW = {"calibration set": "conformal p-value against normal images outside the memory",
        "leave-one-out": "conformal p-value against the support images, each scored against the others "
                         "and the test image",
        "gumbel": "Gumbel fit of held-out block maxima (a model: no guarantee with so few normals)"}


@dataclass(frozen=True)
class Verdict:
    """Thresholds on the decision-map scale of one support set, and where they came from."""

    image: float  # tau_img: the score threshold (for "leave-one-out": the held-out scores' conformal quantile)
    pixel: float  # tau_pix: the low threshold of the hysteresis mask (<= image)
    rule: str  # one of RULES
    n_normals: int  # calibration normals behind the thresholds
    target_fpr: float  # the false-positive rate the verdict aims at
    held_out: tuple[float, ...] = field(default=(), repr=False)  # c_1 .. c_n, the calibration normals' scores

    def describe(self) -> str:
        """One line for reports and tables."""
        return (f"image threshold {self.image:.3f}, pixel threshold {self.pixel:.3f}, target false-positive "
                f"rate {self.target_fpr:.0%}, {_HOW[self.rule]}, from {self.n_normals} normal image(s)")

    def to_dict(self) -> dict:
        return {"image_threshold": self.image, "pixel_threshold": self.pixel, "rule": self.rule,
                "normals": self.n_normals, "target_fpr": self.target_fpr, "text": self.describe()}

    def p_values(self, scores: torch.Tensor, calibration: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) conformal p-values of test scores (B,) against the calibration scores: ``held_out``, or per
        test image ``calibration`` (n, B) (the leave-one-out rule: each c_i with that test image in its memory)."""
        c = torch.tensor(self.held_out, device=scores.device)[:, None] if calibration is None else calibration
        return (1 + (c.double() >= scores[None].double()).sum(0)).double() / (c.shape[0] + 1)

    def judge(self, scores: torch.Tensor, calibration: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) bool: defective (:meth:`p_values` at most the target; the Gumbel model: above its threshold)."""
        if self.rule == "gumbel":
            return scores > self.image
        if self.rule == "leave-one-out" and calibration is None:
            raise ValueError("the leave-one-out verdict needs the support images' scores with each test image "
                             "in their memory")
        # p <= target, with a tolerance: (n + 1) * target is an integer for the usual n and target
        return self.p_values(scores, calibration) <= self.target_fpr + 1e-9


def block_maxima(maps: torch.Tensor, blocks: int) -> torch.Tensor:
    """Maxima of each map's ``blocks x blocks`` tiles.

    Args:
        maps: (N, S, S); S need not be a multiple of ``blocks`` (tiles differ by a pixel at most).

    Returns:
        (N * blocks * blocks,) float64.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, S, S), got shape {tuple(maps.shape)}")
    pooled = torch.nn.functional.adaptive_max_pool2d(maps[:, None].double(), blocks)
    return pooled.flatten()


def gumbel_quantile(block_max: torch.Tensor, n_blocks: int, alpha: float) -> float:
    """The (1 - alpha) quantile of the maximum of ``n_blocks`` i.i.d. Gumbel block maxima.

    The Gumbel law G(mu, beta) is fitted by moments (beta = sd * sqrt(6) / pi, mu = mean - gamma
    beta); the maximum of n draws is G(mu + beta ln n, beta), whose (1 - alpha) quantile is
    ``mu + beta ln n - beta ln(-ln(1 - alpha))``.
    """
    x = block_max.double()
    if x.numel() < 2:
        raise ValueError(f"a Gumbel fit needs at least 2 block maxima, got {x.numel()}")
    beta = float(x.std()) * math.sqrt(6) / math.pi
    mu = float(x.mean()) - EULER_GAMMA * beta
    return mu + beta * math.log(n_blocks) - beta * math.log(-math.log(1 - alpha))


def conformal_rank(n: int, alpha: float) -> int:
    """ceil((n + 1)(1 - alpha)): the rank (1-based, ascending) of the split-conformal threshold among n scores."""
    return math.ceil((n + 1) * (1 - alpha) - 1e-9)


def conformal_quantile(scores: torch.Tensor, alpha: float) -> float:
    """The :func:`conformal_rank`-th smallest of n scores (split-conformal threshold); the largest
    score when that rank exceeds n (then the guaranteed rate is only 1 / (n + 1))."""
    s = torch.sort(scores.double().flatten()).values
    if s.numel() == 0:
        raise ValueError("conformal_quantile: no scores")
    return float(s[min(conformal_rank(s.numel(), alpha), s.numel()) - 1])


def calibrate(held_out: torch.Tensor, target_fpr: float = 0.2, left_out: bool = True, blocks: int = 4,
              pixel_quantile: float = 0.99) -> Verdict:
    """Thresholds from the decision maps of calibration normals.

    Args:
        held_out: (n, S, S) decision maps of n normal images, each scored without itself in the memory.
        target_fpr: the false-positive rate the verdict aims at, in (0, 1).
        left_out: True when the normals are the support images held out of the memory (the test images are
            then judged against their scores with the test image in their memory); False for normal images
            outside the memory.
        blocks: tiles per side for the Gumbel model (used while no p-value reaches the target).
        pixel_quantile: quantile of the calibration normals' pixels that starts the coarse mask.
    """
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    if held_out.ndim != 3 or held_out.shape[0] == 0:
        raise ValueError(f"held_out must be (n >= 1, S, S), got shape {tuple(held_out.shape)}")
    n = held_out.shape[0]
    maxima = held_out.flatten(1).amax(1)
    if conformal_rank(n, target_fpr) <= n:
        rule, image = ("leave-one-out" if left_out else "calibration set"), conformal_quantile(maxima, target_fpr)
    else:
        rule, image = "gumbel", gumbel_quantile(block_maxima(held_out, blocks), blocks * blocks, target_fpr)
    flat = held_out.flatten().double()
    step = max(1, flat.numel() // PIXEL_SAMPLE)
    pixel = float(torch.quantile(flat[::step], pixel_quantile))
    return Verdict(image=image, pixel=min(pixel, image), rule=rule, n_normals=n, target_fpr=target_fpr,
                   held_out=tuple(maxima.double().tolist()))


def verdict_masks(decision: torch.Tensor, verdict: Verdict, calibration: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Judge images and draw M'_coarse by hysteresis.

    Args:
        decision: (B, S, S) decision maps.
        calibration: (n, B) the calibration images' scores with each test image in their memory (the
            leave-one-out rule), or None.

    Returns:
        defective (B,) bool (:meth:`Verdict.judge`); masks (B, S, S) bool: on an image judged defective,
        the pixels above ``verdict.pixel`` connected to a pixel above ``verdict.image`` (or to the image's
        own maximum, when that is lower), empty on an image judged normal.
    """
    scores = decision.flatten(1).amax(1)
    defective = verdict.judge(scores, calibration)
    maps = decision.detach().float().cpu().numpy()
    # hysteresis keeps pixels strictly above ``high``: just below the maximum, the image's own peak counts
    peaks = scores.detach().float().cpu().numpy()
    high = np.minimum(np.float32(verdict.image), np.nextafter(peaks, np.float32(-np.inf)))
    masks = [apply_hysteresis_threshold(m, min(verdict.pixel, h), h) if d else np.zeros(m.shape, bool)
             for m, h, d in zip(maps, high, defective.tolist())]
    masks = torch.from_numpy(np.stack(masks) if masks else np.zeros(maps.shape, bool)).to(decision.device)
    return defective, masks
