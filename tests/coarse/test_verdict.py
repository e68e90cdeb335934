"""The verdict's thresholds: block maxima, Gumbel and conformal quantiles, hysteresis masks."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from samllava.coarse.verdict import (
    Verdict, block_maxima, calibrate, conformal_quantile, conformal_rank, gumbel_quantile, verdict_masks,
)


def test_block_maxima_hand_computed():
    m = torch.arange(16.0).view(1, 4, 4)  # tiles of 2x2: maxima 5, 7, 13, 15
    assert block_maxima(m, 2).tolist() == [5.0, 7.0, 13.0, 15.0]
    assert block_maxima(m, 1).tolist() == [15.0]
    with pytest.raises(ValueError, match="N, S, S"):
        block_maxima(torch.zeros(4, 4), 2)


def test_conformal_quantile_ranks():
    s = torch.arange(1.0, 10.0)  # n = 9
    assert conformal_quantile(s, 0.1) == 9.0  # rank ceil(10 * 0.9) = 9
    assert conformal_quantile(s, 0.2) == 8.0  # rank 8
    assert conformal_quantile(torch.tensor([3.0, 1.0, 2.0, 4.0]), 0.1) == 4.0  # rank 5 > n: the maximum
    with pytest.raises(ValueError, match="no scores"):
        conformal_quantile(torch.zeros(0), 0.1)


def test_gumbel_quantile_recovers_a_known_law():
    mu, beta, alpha = 2.0, 0.5, 0.1
    draws = torch.from_numpy(np.random.default_rng(0).gumbel(mu, beta, 200_000))
    # one block: the (1 - alpha) quantile of G(mu, beta)
    assert gumbel_quantile(draws, 1, alpha) == pytest.approx(mu - beta * math.log(-math.log(1 - alpha)), abs=0.01)
    # the maximum of 16 blocks: G(mu + beta ln 16, beta)
    want = mu + beta * math.log(16) - beta * math.log(-math.log(1 - alpha))
    assert gumbel_quantile(draws, 16, alpha) == pytest.approx(want, abs=0.01)


def _normal_maps(n: int, seed: int, side: int = 32) -> torch.Tensor:
    """Smooth random fields standing in for normal s_ctx maps (correlated pixels, as real maps)."""
    noise = np.random.default_rng(seed).standard_normal((n, side, side))
    return torch.from_numpy(ndimage.gaussian_filter(noise, (0, 2, 2)) * 5 + 1).float()


def test_calibrate_picks_the_rule_by_the_number_of_normals():
    # at 20 % the conformal rank ceil(0.8 (n + 1)) is n (the largest score) up to n = 8, n - 1 from n = 9
    assert [conformal_rank(n, 0.2) for n in (3, 4, 8, 9)] == [4, 4, 8, 8]
    few, many = calibrate(_normal_maps(8, 0), 0.2), calibrate(_normal_maps(9, 0), 0.2)
    assert few.rule == "gumbel" and few.n_normals == 8
    assert many.rule == "conformal" and many.n_normals == 9
    maxima = torch.sort(_normal_maps(9, 0).flatten(1).amax(1)).values
    assert many.image == float(maxima[7])  # rank 8 of 9: the second largest
    assert few.pixel <= few.image and many.pixel <= many.image
    assert "8 held-out normal image(s)" in few.describe()
    assert calibrate(_normal_maps(9, 0), 0.1).rule == "gumbel"  # rank ceil(0.9 * 10) = 9 of 9
    assert calibrate(_normal_maps(19, 0), 0.1).rule == "conformal"  # rank 18 of 19
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate(_normal_maps(4, 0), target_fpr=0.0)


@pytest.mark.parametrize("n", [4, 100])
def test_false_positive_rate_near_target_on_fresh_normals(n):
    """On exchangeable normal maps the achieved rate is near the 10 % target: bounded by it for the
    conformal rule (100 normals), and within a loose band for the Gumbel model (4 normals)."""
    rates = []
    for seed in range(20):
        v = calibrate(_normal_maps(n, seed), target_fpr=0.1)
        fresh = _normal_maps(200, 1000 + seed)
        rates.append(float((fresh.flatten(1).amax(1) > v.image).float().mean()))
    if n >= 9:
        assert np.mean(rates) <= 0.1 + 0.03
    assert 0.01 < np.mean(rates) < 0.3


def test_verdict_masks_hysteresis():
    v = Verdict(image=5.0, pixel=2.0, rule="gumbel", n_normals=4, target_fpr=0.1)
    m = torch.zeros(2, 8, 8)
    m[0, 1:4, 1:4] = 3.0  # shoulder above the pixel threshold ...
    m[0, 2, 2] = 6.0  # ... around a peak above the image threshold
    m[0, 6, 6] = 3.0  # an isolated shoulder without a peak: not part of the mask
    m[1, 4, 4] = 4.0  # an image whose maximum stays below the image threshold: normal
    defective, masks = verdict_masks(m, v)
    assert defective.tolist() == [True, False]
    expect = torch.zeros(8, 8, dtype=torch.bool)
    expect[1:4, 1:4] = True
    assert torch.equal(masks[0], expect)
    assert not masks[1].any()
