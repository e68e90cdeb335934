"""Eq. 6 losses on hand-computed tensors (samllava.sam.losses)."""
import math

import pytest
import torch

from samllava.sam.losses import dice_loss, downsample_mask, focal_loss, segmentation_loss


def test_dice_of_perfect_prediction_is_zero():
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2] = 1.0  # image 1 empty: predicted empty, also loss 0
    logits = torch.where(target > 0, 30.0, -30.0)
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-logits, target).item() > 0.5


def test_dice_hand_value():
    # p = 0.5 everywhere, 2 of 4 pixels foreground: (2 * 1 + 1) / (2 + 2 + 1) = 0.6
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    assert dice_loss(torch.zeros(1, 1, 2, 2), target).item() == pytest.approx(0.4)


def test_focal_hand_value():
    # logit 0, target 1: p_t = 0.5, ce = ln 2, loss = alpha (1 - p_t)^gamma ce = 0.25 * 0.25 * ln 2
    # logit 0, target 0: (1 - alpha) * 0.25 * ln 2
    logits, target = torch.zeros(1, 1, 1, 2), torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    expected = (0.25 * 0.25 * math.log(2) + 0.75 * 0.25 * math.log(2)) / 2
    assert focal_loss(logits, target).item() == pytest.approx(expected)


def test_downsample_area_then_half_and_nearest_up():
    gt = torch.tensor([[1, 1, 1, 0],
                       [1, 0, 0, 0],
                       [0, 0, 1, 1],
                       [0, 0, 1, 1]], dtype=torch.float32)[None, None]
    # block fractions [[3/4, 1/4], [0, 1]] -> > 0.5
    assert downsample_mask(gt, (2, 2))[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert downsample_mask(gt, (8, 8))[0, 0, ::2, ::2].tolist() == gt[0, 0].tolist()
    assert downsample_mask(gt * 0.6, (4, 4)).max() == 1.0  # same size: thresholded too


def test_segmentation_loss_weights_each_branch():
    gt = torch.zeros(2, 1, 16, 16)
    gt[:, :, 4:12, 4:12] = 1.0
    g = torch.Generator().manual_seed(0)
    logits = {"high": torch.randn(2, 1, 16, 16, generator=g), "mid": torch.randn(2, 1, 8, 8, generator=g),
              "low": torch.randn(2, 1, 2, 2, generator=g)}
    total, per = segmentation_loss(logits, gt, weights=(0.3, 1.0, 0.2), focal_weight=2.0)
    for name, x in logits.items():
        t = downsample_mask(gt, x.shape[-2:])
        torch.testing.assert_close(per[name], dice_loss(x, t) + 2.0 * focal_loss(x, t))
    torch.testing.assert_close(total, 0.3 * per["high"] + per["mid"] + 0.2 * per["low"])
    only_mid, per_mid = segmentation_loss({"mid": logits["mid"]}, gt)
    assert set(per_mid) == {"mid"}
    torch.testing.assert_close(only_mid, per["mid"] - 1.0 * focal_loss(logits["mid"], downsample_mask(gt, (8, 8))))


def test_segmentation_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="branches"):
        segmentation_loss({"huge": torch.zeros(1, 1, 4, 4)}, torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        segmentation_loss({"mid": torch.zeros(1, 1, 4, 4)}, torch.zeros(1, 4, 4))
