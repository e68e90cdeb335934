"""Adaptive binarisation of the coarse heatmap with Otsu's threshold (Sec. 3.1, Eq. 1).

``M = 1(H > tau)`` with tau from :func:`skimage.filters.threshold_otsu` per map. A constant map
has no two classes to separate: its mask is empty (no defect proposal), never the whole image.
skimage computes tau on a histogram of ``nbins`` bins over [min, max]: tau is a bin centre, so its
resolution is (max - min) / nbins.
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.filters import threshold_otsu


def _check(heatmaps: torch.Tensor) -> None:
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must be (B, H, W), got shape {tuple(heatmaps.shape)}")
    if not torch.isfinite(heatmaps).all():
        raise ValueError("heatmaps contain NaN or infinite values; Otsu's threshold is undefined")


def otsu_threshold(heatmap: torch.Tensor | np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold tau of one map (H, W); ``nan`` for a constant map (no split exists)."""
    values = np.asarray(
        heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else heatmap, dtype=np.float64
    )
    if values.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("heatmap contains NaN or infinite values; Otsu's threshold is undefined")
    if values.max() == values.min():
        return float("nan")
    return float(threshold_otsu(values, nbins=nbins))


def otsu_masks(heatmaps: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Eq. 1: ``M = 1(H > tau)`` per map.

    Args:
        heatmaps: (B, H, W) real-valued maps.
        nbins: histogram bins of Otsu's method.

    Returns:
        (B, H, W) bool masks on ``heatmaps.device``; an all-False mask for a constant map.
    """
    _check(heatmaps)
    taus = [otsu_threshold(h, nbins) for h in heatmaps]  # one call per image (skimage works on one array)
    tau = torch.tensor(taus, dtype=heatmaps.dtype, device=heatmaps.device).view(-1, 1, 1)
    # A NaN threshold (constant map) compares False everywhere: the empty mask documented above.
    return heatmaps > tau
