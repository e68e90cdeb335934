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
    # at 20 % a p-value reaches the target from n = 4 on ((n + 1) * 0.2 >= 1), at 10 % from n = 9
    assert [conformal_rank(n, 0.2) for n in (3, 4, 8, 9)] == [4, 4, 8, 8]
    few, loo, cal = (calibrate(_normal_maps(3, 0), 0.2), calibrate(_normal_maps(4, 0), 0.2),
                     calibrate(_normal_maps(9, 0), 0.2, left_out=False))
    assert few.rule == "gumbel" and few.n_normals == 3
    assert loo.rule == "leave-one-out" and cal.rule == "calibration set" and cal.n_normals == 9
    maxima = torch.sort(_normal_maps(9, 0).flatten(1).amax(1)).values
    assert cal.image == float(maxima[7])  # rank 8 of 9: the second largest
    assert loo.image == float(_normal_maps(4, 0).flatten(1).amax(1).max())  # rank 4 of 4
    assert few.pixel <= few.image and cal.pixel <= cal.image
    assert "3 normal image(s)" in few.describe() and "outside the memory" in cal.describe()
    assert calibrate(_normal_maps(8, 0), 0.1).rule == "gumbel"  # rank ceil(0.9 * 9) = 9 > 8
    assert calibrate(_normal_maps(9, 0), 0.1).rule == "leave-one-out"
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate(_normal_maps(4, 0), target_fpr=0.0)


def test_p_values_hand_computed():
    v = Verdict(image=4.0, pixel=1.0, rule="calibration set", n_normals=4, target_fpr=0.2, held_out=(1, 2, 3, 4))
    scores = torch.tensor([5.0, 3.5, 0.5])
    assert v.p_values(scores).tolist() == [0.2, 0.4, 1.0]  # (1 + #{c >= s}) / 5
    assert v.judge(scores).tolist() == [True, False, False]  # p <= 0.2: exactly above every normal
    # leave-one-out: each c_i recomputed with the test image in its memory, per test image (n, B)
    loo = Verdict(image=4.0, pixel=1.0, rule="leave-one-out", n_normals=4, target_fpr=0.2, held_out=(1, 2, 3, 4))
    per_test = torch.tensor([[1.0, 0.5], [2.0, 3.0], [3.0, 3.0], [4.0, 3.6]])  # columns: test images
    assert loo.p_values(scores[:2], per_test).tolist() == [0.2, 0.4]
    assert loo.judge(scores[:2], per_test).tolist() == [True, False]
    with pytest.raises(ValueError, match="test image in their memory"):
        loo.judge(scores)
    gumbel = Verdict(image=3.0, pixel=1.0, rule="gumbel", n_normals=2, target_fpr=0.2)
    assert gumbel.judge(scores).tolist() == [True, True, False]


@pytest.mark.parametrize("n", [3, 100])
def test_false_positive_rate_near_target_on_fresh_normals(n):
    """On exchangeable normal maps the achieved rate is near the 10 % target: bounded by it for the
    conformal rule (100 normals outside the memory), and within a loose band for the Gumbel model (3 normals)."""
    rates = []
    for seed in range(20):
        v = calibrate(_normal_maps(n, seed), target_fpr=0.1, left_out=False)
        fresh = _normal_maps(200, 1000 + seed)
        rates.append(float(v.judge(fresh.flatten(1).amax(1)).float().mean()))
    if n >= 9:
        assert 0.1 - 0.04 <= np.mean(rates) <= 0.1 + 0.02
    assert 0.01 < np.mean(rates) < 0.3


def test_verdict_masks_hysteresis():
    v = Verdict(image=5.0, pixel=2.0, rule="gumbel", n_normals=3, target_fpr=0.1)
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


def test_a_flagged_image_below_the_shown_threshold_still_gets_its_peak_as_mask():
    # the leave-one-out rule can flag an image whose score is below the held-out scores' quantile (the
    # support images score lower with the test image in their memory): the mask starts at its own maximum
    v = Verdict(image=5.0, pixel=2.0, rule="leave-one-out", n_normals=4, target_fpr=0.2, held_out=(1, 1, 1, 5))
    m = torch.zeros(1, 8, 8)
    m[0, 2:4, 2:4] = 3.0
    m[0, 2, 2] = 4.0
    defective, masks = verdict_masks(m, v, calibration=torch.full((4, 1), 3.5))
    assert defective.tolist() == [True] and masks[0].sum() == 4 and masks[0, 2, 2]


def test_leave_one_out_rule_holds_its_rate_where_the_held_out_scores_alone_would_not():
    """Exchangeable normal images (noise, pixels as features), K = 4: with the test image in the held-out
    memories the rate is 1 / (K + 1) = 20 %; against the held-out scores alone (each against K - 1 images,
    the earlier rule) it falls well below, since a larger memory lowers every normal score."""
    from samllava.coarse.memory import FewShotCalibrator
    from tests.coarse.test_memory import PixelFeatures

    full_rates, held_rates = [], []
    for seed in range(200):  # the rate is over supports too: many support draws, a few test images each
        g = torch.Generator().manual_seed(seed)
        cal = FewShotCalibrator(PixelFeatures(6)).fit(torch.rand(4, 3, 6, 6, generator=g))
        v = calibrate(cal.held_out_s_ctx, 0.2)
        test = torch.rand(20, 3, 6, 6, generator=g)
        scores = cal(test).s_ctx.flatten(1).amax(1)
        full_rates.append(float(v.judge(scores, cal.scores_with(test)).float().mean()))
        held_rates.append(float((scores > v.image).float().mean()))
    assert v.rule == "leave-one-out"
    assert 0.16 < np.mean(full_rates) < 0.24, np.mean(full_rates)
    assert np.mean(held_rates) < np.mean(full_rates) - 0.05, (np.mean(held_rates), np.mean(full_rates))
