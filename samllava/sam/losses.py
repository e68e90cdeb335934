"""The segmentation loss of the multi-scale mask decoder (Sec. 3.2, Eq. 6).

    L_seg = sum_s w_s * (L_dice(M_gt^s, sigma(L_s)) + lambda * L_focal(M_gt^s, sigma(L_s))),
    s in {high, mid, low}, (w_high, w_mid, w_low) = (0.3, 1.0, 0.2), lambda = 1.0.

Which candidate is supervised: the KEPT one, the candidate of highest predicted IoU that inference
uses (``SamOutput.kept_branches``), so training optimises the mask that the paper outputs. (SAM's
own training instead back-propagates the best of its candidates against the ground truth and
trains the IoU head with an MSE; the paper names no IoU loss, so none is added here.)

Ground truth per branch: area-downsampled to the branch's resolution then ``> 0.5`` (a cell is
foreground when more than half of it is), or nearest-neighbour when the branch is finer than the
ground truth. The ground truth must cover the same field of view as the logits (for non-square
images: SAM's padded frame, see ``samllava.sam.prompts.resize_pad_mask``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from samllava.sam.multiscale import BRANCHES


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 |P T| + s) / (|P| + |T| + s)`` with P = sigmoid(logits).

    Args:
        logits: (B, K, H, W) mask logits.
        target: (B, K, H, W) {0, 1} (bool or float).
        smooth: s; keeps an empty target predicted empty at loss 0.

    Returns:
        Scalar: the mean over the B x K masks.
    """
    if logits.shape != target.shape:
        raise ValueError(f"dice_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    p, t = logits.sigmoid().flatten(2), target.float().flatten(2)
    dice = (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)
    return (1 - dice).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """``torchvision.ops.sigmoid_focal_loss`` (RetinaNet's defaults), mean over all pixels."""
    if logits.shape != target.shape:
        raise ValueError(f"focal_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    return sigmoid_focal_loss(logits, target.float(), alpha=alpha, gamma=gamma, reduction="mean")


def downsample_mask(gt: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """M_gt^s: (B, 1, H, W) {0, 1} -> (B, 1, h, w) float {0, 1} (area then > 0.5; nearest if finer)."""
    gt = gt.float()
    if tuple(gt.shape[-2:]) == tuple(size):
        return (gt > 0.5).float()
    if size[0] <= gt.shape[-2] and size[1] <= gt.shape[-1]:
        return (F.interpolate(gt, size, mode="area") > 0.5).float()
    return F.interpolate(gt, size, mode="nearest-exact")


def segmentation_loss(
    branch_logits: dict[str, torch.Tensor],
    gt: torch.Tensor,
    weights: tuple[float, float, float] = (0.3, 1.0, 0.2),
    focal_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 6 over the branches present (only ``"mid"`` when the multi-scale decoder is off).

    Args:
        branch_logits: ``{"high" | "mid" | "low": (B, K, h_s, w_s)}`` logits (K = 1: the kept mask).
        gt: (B, 1, H, W) ground-truth mask, {0, 1}.
        weights: (w_high, w_mid, w_low).
        focal_weight: lambda.

    Returns:
        The weighted total (scalar) and the unweighted loss of each branch.
    """
    if gt.ndim != 4 or gt.shape[1] != 1:
        raise ValueError(f"gt must be (B, 1, H, W), got shape {tuple(gt.shape)}")
    unknown = set(branch_logits) - set(BRANCHES)
    if unknown or not branch_logits:
        raise ValueError(f"branches must be among {BRANCHES}, got {sorted(branch_logits)}")
    weight = dict(zip(BRANCHES, weights))
    per_branch: dict[str, torch.Tensor] = {}
    for name, logits in branch_logits.items():
        target = downsample_mask(gt, tuple(logits.shape[-2:])).expand_as(logits)
        per_branch[name] = dice_loss(logits, target) + focal_weight * focal_loss(logits, target)
    total = sum(weight[name] * loss for name, loss in per_branch.items())
    return total, per_branch
