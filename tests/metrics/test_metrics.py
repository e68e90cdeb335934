"""samllava.metrics: hand-computed cases, parity with scikit-learn and an exact (sort-based)
AUPRO written after the MVTec AD evaluation, and error messages."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from samllava import metrics as M


def _exact_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    p, r, _ = precision_recall_curve(labels, scores)
    return float(np.nanmax(2 * p * r / np.where(p + r > 0, p + r, np.nan)))


def _exact_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """Sort-based AUPRO as the MVTec AD evaluation computes it: per-pixel FPR / PRO changes,
    ties merged, curve from (0, 0) to (1, 1), trapezoid cut at fpr_limit, divided by it."""
    fp_change = np.zeros(maps.shape)
    pro_change = np.zeros(maps.shape)
    n_regions = 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        n_regions += n
        for r in range(1, n + 1):
            pro_change[i][lab == r] = 1.0 / (lab == r).sum()
    fp_change[masks == 0] = 1.0 / (masks == 0).sum()
    order = np.argsort(maps.ravel(), kind="stable")[::-1]
    s = maps.ravel()[order]
    fpr = np.cumsum(fp_change.ravel()[order])
    pro = np.cumsum(pro_change.ravel()[order]) / n_regions
    keep = np.append(np.diff(s) != 0, True)
    fpr = np.concatenate([[0.0], np.minimum(fpr[keep], 1), [1.0]])
    pro = np.concatenate([[0.0], np.minimum(pro[keep], 1), [1.0]])
    grid = fpr[fpr <= fpr_limit]
    x = np.append(grid, fpr_limit)
    y = np.append(pro[: grid.size], np.interp(fpr_limit, fpr, pro))
    return float(np.trapezoid(y, x) / fpr_limit)


def _random_set(rng: np.random.Generator, n: int = 6, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Maps with blob-shaped anomalies (several regions per image) scoring higher on average."""
    masks = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), (0, 2, 2)) > 0.35
    maps = rng.standard_normal((n, size, size)).astype(np.float32) + 1.2 * masks
    return maps, masks


# --------------------------------------------------------------------------- image level


def test_image_auroc_counts_pairs():
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert M.image_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # a tie counts 1/2: (0.5 vs 0.5) + (0.9 > 0.5) -> 1.5 / 2
    assert M.image_auroc(np.array([0.5, 0.5, 0.9]), np.array([0, 1, 1])) == pytest.approx(0.75)


def test_image_metrics_match_sklearn_with_ties_and_torch():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.standard_normal(300) + y, 1)  # rounding makes many ties
    assert M.image_auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.f1_max(s, y) == pytest.approx(_exact_f1_max(s, y), abs=1e-12)
    assert M.image_auroc(torch.from_numpy(s), torch.from_numpy(y).bool()) == M.image_auroc(s, y)


def test_f1_max_hand_case():
    # thresholds 0.8: P=1 R=.5 -> 2/3; 0.4: .5/.5; 0.35: P=2/3 R=1 -> 0.8; 0.1: P=.5 R=1 -> 2/3
    assert M.f1_max([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.8)


@pytest.mark.parametrize(("scores", "labels", "message"), [
    ([0.1, 0.2, 0.3], [1, 1, 1], r"single class: got 3 anomalous \(1\) and 0 normal"),
    ([0.1, float("nan"), 0.3], [0, 1, 1], "1 NaN"),
    ([0.1, 0.2], [0, 1, 1], "equal length"),
    ([0.1, 0.2, 0.3], [0, 2, 1], r"binary .* \[2\]"),
])
def test_image_auroc_errors(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        M.image_auroc(scores, labels)


def test_f1_needs_positives_only():
    with pytest.raises(ValueError, match="got 0 anomalous"):
        M.f1_max([0.1, 0.2], [0, 0])
    assert M.f1_max([0.1, 0.2], [1, 1]) == pytest.approx(1.0)


# --------------------------------------------------------------------------- pixel AUROC / F1


def test_pixel_auroc_matches_sklearn_within_bound():
    maps, masks = _random_set(np.random.default_rng(1))
    exact = roc_auc_score(masks.ravel(), maps.ravel())
    auc, bound = M.pixel_auroc_with_bound(maps, masks)
    assert bound < 1e-4
    assert abs(auc - exact) <= bound + 1e-12
    # coarse bins: the deviation is real and still inside the bound
    auc16, bound16 = M.pixel_auroc_with_bound(maps, masks, bins=16, tolerance=None)
    assert 1e-4 < abs(auc16 - exact) <= bound16
    # refined where the bound comes from, the same 16 bins end within the tolerance
    auc_r, bound_r = M.pixel_auroc_with_bound(maps, masks, bins=16)
    assert bound_r <= 1e-7 and abs(auc_r - exact) <= bound_r + 1e-12


def test_pixel_metrics_exact_when_each_bin_holds_one_value():
    rng = np.random.default_rng(2)
    masks = rng.random((4, 10, 10)) < 0.3
    maps = np.round(rng.random((4, 10, 10)) + 0.3 * masks, 1)  # 14 distinct values, many ties
    assert M.pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert M.pixel_f1_max(maps, masks) == pytest.approx(_exact_f1_max(maps.ravel(), masks.ravel()), abs=1e-12)


def test_pixel_f1_max_is_a_close_lower_bound():
    maps, masks = _random_set(np.random.default_rng(3))
    exact = _exact_f1_max(maps.ravel(), masks.ravel())
    assert exact - 1e-3 < M.pixel_f1_max(maps, masks) <= exact + 1e-12
    assert M.pixel_f1_max(maps, masks, bins=4, tolerance=None) < exact - 1e-3  # coarse bins lose thresholds


def test_perfect_inverted_and_constant_maps():
    masks = np.zeros((2, 8, 8), dtype=np.uint8)
    masks[0, 2:4, 2:5] = 1
    masks[1, 5:, 6:] = 1
    perfect = masks.astype(np.float32) * 2 + 0.5
    assert M.pixel_auroc(perfect, masks) == 1.0
    assert M.pixel_auroc(-perfect, masks) == 0.0
    assert M.aupro(perfect, masks) == pytest.approx(1.0, abs=1e-12)  # sums of 1/|region|
    assert M.aupro(-perfect, masks) == 0.0
    assert M.pixel_f1_max(perfect, masks) == 1.0
    # a constant map: all pairs truly tied, AUROC 1/2 exactly (as roc_auc_score); unrefined bins cannot tell
    assert M.pixel_auroc_with_bound(np.ones((2, 8, 8)), masks) == (0.5, 0.0)
    assert M.pixel_auroc_with_bound(np.ones((2, 8, 8)), masks, tolerance=None) == (0.5, 0.5)


def test_pixel_auroc_two_bins_by_hand():
    # scores 0,1,2,3 -> bins [0,1.5) and [1.5,3]: neg = (0, 3) (2 in bin 0, 1 in bin 1), pos = (1, 3)
    # bin1 holds pos {1, 3}, neg {0, 2} -> AUC = (pos1*neg0 + .5 pos0*neg0 + .5 pos1*neg1) / (2*2)
    maps = np.array([[[0.0, 1.0, 2.0, 3.0]]])
    masks = np.array([[[0, 1, 0, 1]]])
    auc, bound = M.pixel_auroc_with_bound(maps, masks, bins=2, tolerance=None)
    assert auc == pytest.approx((1 * 1 + 0.5 * 1 * 1 + 0.5 * 1 * 1) / 4)
    assert bound == pytest.approx(0.5 * (1 * 1 + 1 * 1) / 4)
    assert roc_auc_score(masks.ravel(), maps.ravel()) == pytest.approx(0.75)  # within 0.75 +- 0.25


def test_list_equals_stacked_and_chunking_and_torch():
    maps, masks = _random_set(np.random.default_rng(4))
    ref = M.pixel_histogram(maps, masks, bins=4096, regions=True)
    for other in (
        M.pixel_histogram(list(maps), list(masks), bins=4096, regions=True),
        M.pixel_histogram(maps, masks, bins=4096, regions=True, chunk=37),  # chunks cut through images
        M.pixel_histogram(maps, masks, bins=4096, regions=True, chunk=10**6),  # images batched together
        M.pixel_histogram(torch.from_numpy(maps), torch.from_numpy(masks), bins=4096, regions=True),
    ):
        np.testing.assert_array_equal(other.pos, ref.pos)
        np.testing.assert_array_equal(other.neg, ref.neg)
        np.testing.assert_allclose(other.region_overlap, ref.region_overlap, rtol=1e-12)
    assert M.pixel_auroc(list(maps), list(masks)) == M.pixel_auroc(maps, masks)


def test_images_of_different_sizes():
    rng = np.random.default_rng(5)
    maps = [rng.random((5, 7)), rng.random((9, 3))]
    masks = [rng.random((5, 7)) < 0.4, rng.random((9, 3)) < 0.4]
    flat_s = np.concatenate([m.ravel() for m in maps])
    flat_y = np.concatenate([m.ravel() for m in masks])
    auc, bound = M.pixel_auroc_with_bound(maps, masks)
    assert abs(auc - roc_auc_score(flat_y, flat_s)) <= bound + 1e-12


@pytest.mark.parametrize(("maps", "masks", "message"), [
    (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), r"maps\[0\] and masks\[0\] .* \(4, 4\) and \(4, 5\)"),
    (np.zeros((2, 4, 4)), np.full((2, 4, 4), 0.5), r"masks\[0\] must be binary .*\[0.5\]"),
    (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), r"single class: got 0 anomalous \(1\) and 16 normal"),
    ([np.zeros((4, 4)), np.zeros((4, 4))], [np.ones((4, 4))], "same, non-zero number of images"),
    (np.zeros((16,)), np.zeros((16,)), r"\(N, H, W\)"),
])
def test_pixel_errors(maps, masks, message):
    with pytest.raises(ValueError, match=message):
        M.pixel_auroc(maps, masks)


def test_nan_map_is_rejected_naming_the_image():
    maps = np.random.default_rng(6).random((3, 4, 4))
    maps[2, 1, 1] = np.nan
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    with pytest.raises(ValueError, match=r"maps\[2\] contains 1 NaN"):
        M.pixel_auroc(maps, masks)


# --------------------------------------------------------------------------- AUPRO


def test_aupro_two_regions_by_hand():
    # one row: region A = pixels 0-1, region B = pixel 5, normal = pixels 2-4
    maps = np.array([[[0.9, 0.5, 0.7, 0.1, 0.2, 0.3]]])
    masks = np.array([[[1, 1, 0, 0, 0, 1]]])
    # curve: (0,0) (0,.25) (1/3,.25) (1/3,.5) (1/3,1) (2/3,1) (1,1)
    value, bound = M.aupro_with_bound(maps, masks, fpr_limit=0.3)
    assert value == pytest.approx(0.25) and bound == 0.0  # no bin mixes normal and anomalous
    assert M.aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.25 / 3 + 2 / 3)


def test_aupro_regions_are_8_connected():
    # anomalous (0,0) touches (1,1) only diagonally: one region of 3 pixels, of which only
    # (0,0) outscores the normal pixels -> PRO = 1/3 (two 4-connected regions would give 1/2)
    masks = np.zeros((1, 3, 3), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    maps = np.zeros((1, 3, 3))
    maps[~masks] = np.linspace(0.3, 0.8, 6)
    maps[0, 0, 0], maps[0, 1, 1], maps[0, 1, 2] = 0.9, 0.05, 0.1
    assert M.aupro(maps, masks, fpr_limit=0.1) == pytest.approx(1 / 3)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_matches_exact_reference_within_bound(fpr_limit):
    maps, masks = _random_set(np.random.default_rng(7))
    exact = _exact_aupro(maps, masks, fpr_limit)
    value, bound = M.aupro_with_bound(maps, masks, fpr_limit)
    assert bound < 1e-3
    assert abs(value - exact) <= bound + 1e-9
    coarse, coarse_bound = M.aupro_with_bound(maps, masks, fpr_limit, bins=8)
    assert abs(coarse - exact) <= coarse_bound + 1e-9


def test_aupro_errors():
    maps, masks = np.zeros((1, 4, 4)), np.ones((1, 4, 4))
    with pytest.raises(ValueError, match="got 16 anomalous"):
        M.aupro(maps, masks)
    masks[0, 0, 0] = 0
    with pytest.raises(ValueError, match=r"fpr_limit must be in \(0, 1\], got 0"):
        M.aupro(maps, masks, fpr_limit=0.0)
    with pytest.raises(ValueError, match="regions=True"):
        M.pixel_histogram(maps, masks).aupro_with_bound()


# --------------------------------------------------------------------------- descriptions


@pytest.mark.parametrize(("answer", "expected"), [
    ("Yes, there is a scratch on the left.", True),
    ("  **No.** The object looks normal.", False),
    ('"yes"', True),
    ("Answer: No", False),
    ("There is a crack.", None),
    ("Yesterday it was fine.", None),
    ("Nope", None),
    ("Not sure", None),
    ("", None),
])
def test_parse_yes_no(answer, expected):
    assert M.parse_yes_no(answer) is expected


def test_description_accuracy():
    answers = ["Yes, a hole.", "No.", "No, it is fine.", "There is a crack.", "yes", "Maybe"]
    labels = [1, 1, 0, 1, 0, 0]
    # correct: yes/1, no/0 ; wrong: no/1, neither/1, yes/0, neither/0
    assert M.description_accuracy(answers, labels) == pytest.approx(2 / 6)
    assert M.description_accuracy(answers, torch.tensor(labels)) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="2 answers and labels of shape \\(3,\\)"):
        M.description_accuracy(["yes", "no"], [1, 0, 1])
    with pytest.raises(ValueError, match="binary"):
        M.description_accuracy(["yes"], [3])


# --------------------------------------------------------------------------- tables


def test_category_table_mean_skips_missing():
    rows = {"bottle": {"image_auroc": 0.9, "aupro": 0.8}, "cable": {"image_auroc": 0.7, "aupro": float("nan")},
            "wood": {"image_auroc": 0.8}}
    df = M.category_table(rows)
    assert list(df.columns) == ["category", "image_auroc", "aupro"]
    assert list(df["category"]) == ["bottle", "cable", "wood", "mean"]
    assert df["image_auroc"].iloc[-1] == pytest.approx(0.8)
    assert df["aupro"].iloc[-1] == pytest.approx(0.8)  # the two n/a cells are left out
    assert pd.isna(df["aupro"].iloc[1]) and pd.isna(df["aupro"].iloc[2])
    all_nan = M.category_table({"a": {"x": None}, "b": {"x": None}})
    assert pd.isna(all_nan["x"].iloc[-1])
    with pytest.raises(ValueError, match="reserved"):
        M.category_table({"mean": {"x": 1.0}})
    with pytest.raises(ValueError, match="a/x must be a number"):
        M.category_table({"a": {"x": "high"}})


def test_mean_std():
    mean, std = M.mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert M.mean_std(torch.tensor([3.0, 5.0]), ddof=0) == (4.0, 1.0)
    assert math.isnan(M.mean_std([0.5])[1])
    assert all(math.isnan(v) for v in M.mean_std([float("nan")] * 3))  # metric not available
    with pytest.raises(ValueError, match=r"NaN at positions \[1\] of 2"):
        M.mean_std([0.5, float("nan")])
    with pytest.raises(ValueError, match="at least one value"):
        M.mean_std([])


# --------------------------------------------------------------------------- refinement of crowded bins


def _crowded_set(rng: np.random.Generator, n: int = 6, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """float32 maps like the coarse stage's log Lambda: -exp(-logit), so every clear defect crowds just
    below 0 (down to exact zeros) while normal pixels spread over [-4, 0)."""
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        y, x = rng.integers(4, size - 12, 2)
        masks[i, y:y + 8, x:x + 8] = True
    logit = rng.normal(-1.0, 1.5, masks.shape) + 60.0 * masks * rng.random(masks.shape)
    logit[rng.random(masks.shape) < 0.02] += 40  # some normal pixels crowd there too
    return torch.nn.functional.logsigmoid(torch.from_numpy(logit.astype(np.float32))).numpy(), masks


def test_crowded_scores_are_refined_to_the_exact_values():
    maps, masks = _crowded_set(np.random.default_rng(11))
    exact = roc_auc_score(masks.ravel(), maps.ravel())
    coarse_auc, coarse_bound = M.pixel_auroc_with_bound(maps, masks, tolerance=None)
    assert coarse_bound > 1e-3 and abs(coarse_auc - exact) > 1e-4  # equal-width bins cannot resolve them
    auc, bound = M.pixel_auroc_with_bound(maps, masks)
    assert bound <= 1e-7 and abs(auc - exact) <= bound + 1e-12
    pro, pro_bound = M.aupro_with_bound(maps, masks)
    assert pro_bound <= 1e-6 and abs(pro - _exact_aupro(maps, masks, 0.3)) <= pro_bound + 1e-9
    assert M.pixel_f1_max(maps, masks) == pytest.approx(_exact_f1_max(maps.ravel(), masks.ravel()), abs=1e-9)


def test_refined_value_is_stable_under_float_noise():
    """A 1e-7 relative change of the scores (another thread count's summation order) moves the value by no
    more than the tie pattern does: here not at all in the printed digits (the auditor's fourth decimal)."""
    maps, masks = _crowded_set(np.random.default_rng(12))
    noisy = (maps * (1 + 1e-7 * np.random.default_rng(0).standard_normal(maps.shape))).astype(np.float32)
    a, b = M.pixel_auroc(maps, masks), M.pixel_auroc(noisy, masks)
    assert f"{100 * a:.4f}" == f"{100 * b:.4f}"
    unrefined = [M.pixel_auroc(x, masks, tolerance=None) for x in (maps, noisy)]
    assert abs(unrefined[0] - unrefined[1]) > abs(a - b)


def test_exact_edges_match_the_binning_arithmetic():
    from samllava.metrics.pixel import _BinCounts

    rng = np.random.default_rng(13)
    x = np.concatenate([rng.normal(0, 1, 4000), -np.exp(-rng.uniform(5, 90, 4000)), [0.0, -0.0]]).astype(np.float32)
    lo, hi, bins = float(x.min()), float(x.max()), 4096
    acc = _BinCounts(lo, bins / (hi - lo), bins, np.float32, regions=False, chunk=64)
    b = np.arange(1, bins)
    edge = acc.edge_of(b)
    assert (acc.bin_of(edge) >= b).all()
    below = np.nextafter(edge, np.float32(-np.inf))
    assert (acc.bin_of(below)[edge > lo] < b[edge > lo]).all()  # the smallest such float
    assert not np.signbit(edge[edge == 0]).any()


def test_sum_of_counts_is_kept_by_refinement():
    maps, masks = _crowded_set(np.random.default_rng(14))
    h = M.pixel_histogram(maps, masks, regions=True)
    assert h.atomic is not None and h.n_pos == masks.sum() and h.n_neg == (~masks).sum()
    assert h.region_overlap.sum() == pytest.approx(h.n_regions)


def test_oracle_accuracy_hand_made():
    assert M.oracle_accuracy(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert M.oracle_accuracy(np.array([0.1, 0.9, 0.8, 0.2]), np.array([1, 0, 1, 0])) == 0.5  # no cut beats "all normal"
    assert M.oracle_accuracy(np.array([0.1, 0.9, 0.8, 0.2, 0.05]), np.array([1, 1, 1, 0, 0])) == 0.8  # cut at 0.2
    # tied scores cannot be split: all four at 0.5 -> the best is "all normal" or "all defective"
    assert M.oracle_accuracy(np.full(4, 0.5), np.array([0, 1, 1, 1])) == 0.75
