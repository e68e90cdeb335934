"""The verdict's thresholds: block maxima, Gumbel and conformal quantiles, hysteresis masks."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from samllava.coarse.verdict import (
    Verdict, block_maxima, calibrate, conformal_threshold, gumbel_quantile, verdict_masks,
)


def test_block_maxima_hand_computed():
    m = torch.arange(16.0).view(1, 4, 4)  # tiles of 2x2: maxima 5, 7, 13, 15
    assert block_maxima(m, 2).tolist() == [5.0, 7.0, 13.0, 15.0]
    assert block_maxima(m, 1).tolist() == [15.0]
    with pytest.raises(ValueError, match="N, S, S"):
        block_maxima(torch.zeros(4, 4), 2)


def test_conformal_threshold_interpolates_the_order_statistics():
    s = torch.arange(1.0, 10.0)  # n = 9
    assert float(conformal_threshold(s, 0.1)) == 9.0  # u = 10 * 0.9 = 9: the 9th
    assert float(conformal_threshold(s, 0.2)) == 8.0  # u = 8
    assert float(conformal_threshold(s, 0.25)) == pytest.approx(7.5)  # u = 7.5: half way from the 7th to the 8th
    assert float(conformal_threshold(torch.tensor([3.0, 1.0, 2.0, 4.0]), 0.1)) == 4.0  # u = 4.5 >= n: the largest
    per_test = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])  # (n, B): one threshold each
    assert conformal_threshold(per_test, 0.2).tolist() == [4.0, 40.0]
    with pytest.raises(ValueError, match="no scores"):
        conformal_threshold(torch.zeros(0), 0.1)


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


def test_calibrate_picks_the_rule_and_states_the_rate_it_can_promise():
    one, loo, cal = (calibrate(_normal_maps(1, 0), 0.2), calibrate(_normal_maps(4, 0), 0.2),
                     calibrate(_normal_maps(9, 0), 0.2, left_out=False))
    assert one.rule == "gumbel" and one.n_normals == 1  # nothing to leave out
    assert loo.rule == "leave-one-out" and cal.rule == "calibration set" and cal.n_normals == 9
    maxima = torch.sort(_normal_maps(9, 0).flatten(1).amax(1)).values
    assert cal.image == float(maxima[7])  # u = 10 * 0.8 = 8: the 8th of 9
    assert loo.image == float(_normal_maps(4, 0).flatten(1).amax(1).max())  # u = 4: the largest of 4
    assert one.pixel <= one.image and cal.pixel <= cal.image
    two = calibrate(_normal_maps(2, 0), 0.2)
    assert two.rule == "leave-one-out" and two.finest_rate == pytest.approx(1 / 3)
    assert "at best 33%" in two.describe() and "at best" not in cal.describe()
    assert "outside the memory" in cal.describe() and "1 normal image(s)" in one.describe()
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate(_normal_maps(4, 0), target_fpr=0.0)


def test_judge_hand_computed():
    cal = Verdict(image=4.0, pixel=1.0, rule="calibration set", n_normals=4, target_fpr=0.2, held_out=(1, 2, 3, 4))
    scores = torch.tensor([5.0, 3.5, 0.5])
    assert cal.judge(scores).tolist() == [True, False, False]  # above the largest of 4 (u = 4)
    # leave-one-out: the support images' scores with each test image in their memory, per test image (n, B)
    loo = Verdict(image=4.0, pixel=1.0, rule="leave-one-out", n_normals=4, target_fpr=0.2, held_out=(1, 2, 3, 4))
    per_test = torch.tensor([[1.0, 0.5], [2.0, 3.0], [3.0, 3.0], [4.0, 3.5]])
    assert loo.thresholds(per_test).tolist() == [4.0, 3.5]
    assert loo.judge(scores[:2], per_test).tolist() == [True, False]
    with pytest.raises(ValueError, match="test image in their memory"):
        loo.judge(scores)
    gumbel = Verdict(image=3.0, pixel=1.0, rule="gumbel", n_normals=1, target_fpr=0.2)
    assert gumbel.judge(scores).tolist() == [True, True, False]


@pytest.mark.parametrize("n, lo, hi", [(14, 0.06, 0.14), (100, 0.07, 0.12), (5, 0.12, 0.22)])
def test_false_positive_rate_near_target_on_fresh_normals(n, lo, hi):
    """On exchangeable normal maps outside the memory the achieved rate is near the 10 % target (u = 13.5
    for n = 14: interpolated between two order statistics), and 1 / (n + 1) with too few normals (n = 5)."""
    rates = []
    for seed in range(60):
        v = calibrate(_normal_maps(n, seed), target_fpr=0.1, left_out=False)
        fresh = _normal_maps(100, 1000 + seed)
        rates.append(float(v.judge(fresh.flatten(1).amax(1)).float().mean()))
    assert lo <= np.mean(rates) <= hi, np.mean(rates)


def test_verdict_masks_hysteresis():
    v = Verdict(image=5.0, pixel=2.0, rule="gumbel", n_normals=1, target_fpr=0.1)
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
    defective, masks = verdict_masks(m, v, calibration=torch.tensor([[1.0], [2.0], [3.0], [3.5]]))
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
