"""Figures: image grids with masks, heatmaps and overlays (matplotlib, Agg-safe)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def weights_phrase(profile) -> str:
    """"random weights: clip, sam" (the profile's components without pretrained weights) or "pretrained weights"."""
    random = [k for k, v in profile.weights_label().items() if v == "random"]
    return "random weights: " + ", ".join(random) if random else "pretrained weights"


def to_numpy_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3,H,W) tensor in [0,1] or (H,W,3) array -> (H,W,3) float array in [0,1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.clip(image, 0, 1)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.squeeze(np.asarray(x))


def overlay(image, mask=None, heatmap=None, alpha: float = 0.45, colour=(1.0, 0.1, 0.1)) -> np.ndarray:
    """(H,W,3) image with a heatmap (jet) and/or a mask outline tint blended on top."""
    import matplotlib  # heavy (~0.5 s), only when a figure is drawn

    img = to_numpy_image(image).copy()
    if heatmap is not None:
        h = _np(heatmap)
        h = (h - h.min()) / (np.ptp(h) + 1e-8)
        img = (1 - alpha) * img + alpha * matplotlib.colormaps["jet"](h)[..., :3]
    if mask is not None:
        m = _np(mask).astype(bool)
        img[m] = (1 - alpha) * img[m] + alpha * np.asarray(colour)
    return np.clip(img, 0, 1)


def image_grid(rows: Sequence[Sequence], row_titles: Sequence[str] | None = None,
               col_titles: Sequence[str] | None = None, cell: float = 2.0, cmap_for_2d: str = "jet"):
    """A figure of ``rows`` x ``cols`` panels; 2-D panels are drawn with ``cmap_for_2d`` (masks in grey)."""
    import matplotlib.pyplot as plt  # heavy, only when a figure is drawn

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols, cell * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(row) or row[j] is None:
                continue
            panel = row[j]
            arr = (
                _np(panel)
                if not (isinstance(panel, np.ndarray) and panel.ndim == 3 and panel.shape[-1] == 3)
                else panel
            )
            if arr.ndim == 3:
                ax.imshow(to_numpy_image(arr))
            elif arr.dtype == bool or set(np.unique(arr)) <= {0, 1}:
                ax.imshow(arr, cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(arr, cmap=cmap_for_2d)
            if i == 0 and col_titles is not None and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=9)
        if row_titles is not None:
            axes[i][0].text(
                -0.05, 0.5, row_titles[i], transform=axes[i][0].transAxes, ha="right", va="center", fontsize=8
            )
    fig.tight_layout()
    return fig


def loss_figure(curves: dict[str, Sequence[float]], smooth: int = 10):
    """Loss curves (raw and a running mean over ``smooth`` steps)."""
    import matplotlib.pyplot as plt  # heavy, only when a figure is drawn

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, values in curves.items():
        v = np.asarray(values, dtype=float)
        line, = ax.plot(v, alpha=0.3)
        if len(v) >= smooth:
            ax.plot(np.arange(smooth - 1, len(v)), np.convolve(v, np.ones(smooth) / smooth, mode="valid"),
                    color=line.get_color(), label=name)
        else:
            line.set_label(name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    return fig
