"""The verdict: image and pixel thresholds calibrated on normal images only, never on a test label.

The paper thresholds H' to get M'_coarse but says nothing about how a single image is judged normal
or defective. Here an image is defective when its score (the maximum of its decision map) is unusually
high *for a normal image scored the same way*: above the conformal threshold of n calibration normals'
scores c_1 .. c_n, their order statistic at position u = (n + 1)(1 - target_fpr), interpolated linearly
between its two neighbours (:func:`conformal_threshold`). When the test image and the calibration normals
are exchangeable (drawn alike and scored alike), a normal test image exceeds it with probability close to
``target_fpr`` (exactly when u is a whole number; split conformal prediction), but never less than
1 / (n + 1): with fewer normals than 1 / target_fpr - 1 the threshold is their largest score and the rate
is 1 / (n + 1). Which normals calibrate, best first (:func:`calibrate` picks the rule, reported in every
table and report):

* ``"calibration set"``: normal images that are not in the memory (``--calibration``; evaluation's
  train/good images beyond the K shots), scored against the whole memory exactly as test images are.
* ``"leave-one-out"``: the support images themselves, each held out of the memory and scored against the
  other K - 1 images *and the test image* (full conformal: :func:`samllava.coarse.memory.calibration_scores`),
  as the test image is scored against all K: every image of the K + 1 is scored against K others of the
  same kind, and the threshold is computed per test image. Held-out scores against K - 1 images alone sit
  higher than a normal test image's (a larger memory lowers every score), which made the earlier rule
  flag almost no normal image on real photographs (docs/verdict.md).
* ``"gumbel"``: a single normal image (K = 1), nothing to leave out: a model. The image score is a maximum
  over ``blocks**2`` blocks; block maxima of the held-out map (its patches matched outside their grid
  neighbourhood) fit a Gumbel law whose maximum over ``blocks**2`` blocks is again Gumbel
  (:func:`gumbel_quantile`). No guarantee.

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
_HOW = {"calibration set": "conformal threshold of normal images outside the memory",
        "leave-one-out": "conformal threshold of the support images, each scored against the others and the "
                         "test image",
        "gumbel": "Gumbel fit of held-out block maxima (a model: no guarantee with so few normals)"}


@dataclass(frozen=True)
class Verdict:
    """Thresholds on the decision-map scale of one support set, and where they came from."""

    image: float  # tau_img: the score threshold (for "leave-one-out", shown: the held-out scores' threshold)
    pixel: float  # tau_pix: the low threshold of the hysteresis mask (<= image)
    rule: str  # one of RULES
    n_normals: int  # calibration normals behind the thresholds
    target_fpr: float  # the false-positive rate the verdict aims at
    held_out: tuple[float, ...] = field(default=(), repr=False)  # c_1 .. c_n, the calibration normals' scores

    def describe(self) -> str:
        """One line for reports and tables."""
        rate = f"target false-positive rate {self.target_fpr:.0%}"
        if self.finest_rate > self.target_fpr + 1e-9:
            rate += f" (with {self.n_normals} normal image(s) at best {self.finest_rate:.0%})"
        return (f"image threshold {self.image:.3f}, pixel threshold {self.pixel:.3f}, {rate}, {_HOW[self.rule]}, "
                f"from {self.n_normals} normal image(s)")

    def to_dict(self) -> dict:
        return {"image_threshold": self.image, "pixel_threshold": self.pixel, "rule": self.rule,
                "normals": self.n_normals, "target_fpr": self.target_fpr, "text": self.describe()}

    def thresholds(self, calibration: torch.Tensor | None = None) -> torch.Tensor | float:
        """The image threshold: ``image``, or per test image from ``calibration`` (n, B), the support images'
        scores with each test image in their memory (the leave-one-out rule), :func:`conformal_threshold`."""
        if self.rule == "leave-one-out":
            if calibration is None:
                raise ValueError("the leave-one-out verdict needs the support images' scores with each test image "
                                 "in their memory")
            return conformal_threshold(calibration, self.target_fpr)
        return self.image

    def judge(self, scores: torch.Tensor, calibration: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) bool: defective, the score above the image threshold (:meth:`thresholds`)."""
        return scores.double() > self.thresholds(calibration)

    @property
    def finest_rate(self) -> float:
        """The false-positive rate the rule can promise: the target, or 1 / (n + 1) with fewer normals."""
        return max(self.target_fpr, 1 / (self.n_normals + 1)) if self.rule != "gumbel" else self.target_fpr


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


def conformal_threshold(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """The conformal threshold of calibration scores (n,), or of per-test-image calibration scores (n, B).

    The order statistic at position u = (n + 1)(1 - alpha) (1-based), interpolated linearly between the
    ones at floor(u) and floor(u) + 1; the largest score when u >= n. Returns a 0-d tensor, or (B,).
    """
    if scores.shape[0] == 0:
        raise ValueError("conformal_threshold: no scores")
    s = torch.sort(scores.double(), dim=0).values
    n = s.shape[0]
    u = (n + 1) * (1 - alpha)
    if u >= n - 1e-9:
        return s[-1]
    j = max(1, math.floor(u + 1e-9))
    return s[j - 1] + (u - j) * (s[j] - s[j - 1])


def calibrate(held_out: torch.Tensor, target_fpr: float = 0.2, left_out: bool = True, blocks: int = 4,
              pixel_quantile: float = 0.99) -> Verdict:
    """Thresholds from the decision maps of calibration normals.

    Args:
        held_out: (n, S, S) decision maps of n normal images, each scored without itself in the memory.
        target_fpr: the false-positive rate the verdict aims at, in (0, 1).
        left_out: True when the normals are the support images held out of the memory (the test images are
            then judged against their scores with the test image in their memory); False for normal images
            outside the memory.
        blocks: tiles per side for the Gumbel model (a single normal image).
        pixel_quantile: quantile of the calibration normals' pixels that starts the coarse mask.
    """
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    if held_out.ndim != 3 or held_out.shape[0] == 0:
        raise ValueError(f"held_out must be (n >= 1, S, S), got shape {tuple(held_out.shape)}")
    n = held_out.shape[0]
    maxima = held_out.flatten(1).amax(1)
    if n > 1 or not left_out:
        rule, image = ("leave-one-out" if left_out else "calibration set"), float(conformal_threshold(maxima,
                                                                                                     target_fpr))
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
