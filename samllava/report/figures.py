"""Figures: image grids with masks, heatmaps and overlays (matplotlib, Agg-safe).

The panel classes (:class:`ImagePanel`, :class:`HeatmapPanel`, :class:`MaskPanel` on an :func:`axes_row`)
draw labelled, framed panels whose data can change without rebuilding the axes: the interactive
panels of :mod:`samllava.notebook.widgets` and :mod:`samllava.notebook.try_image` redraw through them.
"""
from __future__ import annotations

import io
import math
from typing import Sequence

import matplotlib.colors
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CMAP = "inferno"  # perceptually uniform, so equal colour steps are equal value steps on the colour bar
OVERLAY_ALPHA = 0.45


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
    import matplotlib  # heavy to import: only when a figure is drawn

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


# ----------------------------------------------------------------------------- panels that redraw
FIG_H = 3.3  # inches
PANEL = 2.3  # inches, the side of one square panel
DPI = 90
MASK_COLOUR = "cyan"  # the mask outline on the heatmap and the threshold on the colour bar


def axes_row(n_panels: int, colourbar_after: int | None) -> tuple[Figure, list[Axes], Axes | None]:
    """A figure with ``n_panels`` square panels in a row and a colour bar axis after panel ``colourbar_after``."""
    left, gap, cbar_gap, cbar_w, cbar_labels = 0.55, 0.35, 0.1, 0.12, 0.5  # inches
    width = left + n_panels * PANEL + (n_panels - 1) * gap + 0.1
    width += cbar_gap + cbar_w + cbar_labels if colourbar_after is not None else 0
    fig = Figure(figsize=(width, FIG_H), dpi=DPI)
    FigureCanvasAgg(fig)
    bottom, height = 0.5 / FIG_H, PANEL / FIG_H
    axes, cax, x = [], None, left
    for i in range(n_panels):
        axes.append(fig.add_axes((x / width, bottom, PANEL / width, height)))
        x += PANEL
        if i == colourbar_after:
            cax = fig.add_axes(((x + cbar_gap) / width, bottom, cbar_w / width, height))
            x += cbar_gap + cbar_w + cbar_labels + gap
        else:
            x += gap
    return fig, axes, cax


def frame(ax: Axes, side: int, ylabel: bool) -> None:
    """Pixel axes with labels and a dark frame (a white mask does not merge with the page)."""
    ticks = [0, side // 2, side - 1]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=7, length=2)
    ax.set_xlabel("x (px)", fontsize=8, labelpad=1)
    if ylabel:
        ax.set_ylabel("y (px)", fontsize=8, labelpad=1)
    for spine in ax.spines.values():
        spine.set_edgecolor("0.2")
        spine.set_linewidth(1.2)


def png_bytes(rgba: np.ndarray) -> bytes:
    """An (H, W, 4) uint8 canvas as PNG, fast (zlib level 1: a redraw is not spent compressing)."""
    from PIL import Image  # only when a panel is encoded

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba[..., :3])).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class Blitter:
    """Redraws a figure by drawing only what changes.

    The first :meth:`png` draws the figure with the ``dynamic()`` artists hidden (frames' ticks, tick
    labels, axis labels: the text that costs most) and keeps that background; every call restores it
    and draws the dynamic artists (images, titles, notes, a colour bar's axes, outlines) on top.
    """

    def __init__(self, fig: Figure, dynamic) -> None:
        self.fig, self.dynamic, self._background = fig, dynamic, None

    def png(self) -> bytes:
        canvas = self.fig.canvas
        if self._background is None:
            artists = self.dynamic()
            shown = [a.get_visible() for a in artists]
            for a in artists:
                a.set_visible(False)
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.fig.bbox)
            for a, visible in zip(artists, shown):
                a.set_visible(visible)
        canvas.restore_region(self._background)
        renderer = canvas.get_renderer()
        for a in self.dynamic():
            a.draw(renderer)  # an invisible artist draws nothing
        return png_bytes(np.asarray(canvas.buffer_rgba()))


class HeatmapPanel:
    """A heatmap with its colour bar in the map's own units, a threshold marked on the bar and a mask
    outlined on the map; :meth:`update` changes the data without rebuilding the axes."""

    def __init__(self, fig: Figure, ax: Axes, cax: Axes, side: int) -> None:
        self.fig, self.ax = fig, ax
        self.im = ax.imshow(np.zeros((side, side)), cmap=CMAP, interpolation="nearest")
        self.bar = fig.colorbar(self.im, cax=cax)
        self.bar.ax.tick_params(labelsize=7)
        self.marks = [cax.axhline(0, color=MASK_COLOUR, linewidth=2.5), cax.axhline(0, color="black", linewidth=0.8)]
        self.outline = None
        frame(ax, side, ylabel=False)

    def update(self, heat: np.ndarray, name: str, threshold: float | None = None, mask: np.ndarray | None = None,
               title: str | None = None) -> matplotlib.colors.Normalize:
        lo, hi = float(heat.min()), float(heat.max())
        if threshold is not None and math.isfinite(threshold):  # keep a manual threshold on the bar
            lo, hi = min(lo, threshold), max(hi, threshold)
        norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1e-6)
        self.im.set_data(heat)
        self.im.set_norm(norm)
        self.bar.update_normal(self.im)
        self.bar.set_label(f"{name.split(' ')[0]} value", fontsize=8)
        shown = threshold is not None and math.isfinite(threshold)
        for line in self.marks:
            line.set_ydata([threshold if shown else lo] * 2)
            line.set_visible(shown)
        if self.outline is not None:
            self.outline.remove()
            self.outline = None
        if mask is not None and mask.any() and not mask.all():
            self.outline = self.ax.contour(mask.astype(np.float32), levels=[0.5], colors=MASK_COLOUR, linewidths=0.9)
        self.ax.set_title(title or name, fontsize=9)
        return norm

    def artists(self) -> list:
        """What :meth:`update` changes, in drawing order (for :class:`Blitter`)."""
        return [self.im, *([self.outline] if self.outline is not None else []), *self.ax.spines.values(),
                self.ax.title, self.bar.ax]


class MaskPanel:
    """A binary mask, framed; a note in the middle when it is empty or absent."""

    def __init__(self, ax: Axes, side: int) -> None:
        self.ax = ax
        self.im = ax.imshow(np.zeros((side, side)), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        self.note = ax.text(0.5, 0.5, "", ha="center", va="center", transform=ax.transAxes, fontsize=8, color="white")
        frame(ax, side, ylabel=False)

    def update(self, mask: np.ndarray | None, title: str, empty_note: str = "", absent_note: str = "no mask") -> None:
        absent = mask is None
        self.im.set_data(np.full(self.im.get_array().shape, 0.85) if absent else mask.astype(np.float32))
        note = absent_note if absent else (empty_note if not mask.any() else "")
        self.note.set_text(note)
        self.note.set_color("black" if absent else "white")
        self.ax.set_title(title, fontsize=9)

    def artists(self) -> list:
        return [self.im, self.note, *self.ax.spines.values(), self.ax.title]


class ImagePanel:
    """The image, optionally under a heatmap drawn in the heatmap panel's colours."""

    def __init__(self, ax: Axes, side: int, ylabel: bool = True) -> None:
        self.ax = ax
        self.im = ax.imshow(np.zeros((side, side, 3)), interpolation="nearest")
        self.heat = ax.imshow(np.zeros((side, side)), cmap=CMAP, alpha=OVERLAY_ALPHA, interpolation="nearest")
        frame(ax, side, ylabel=ylabel)

    def update(self, image: np.ndarray, title: str, heat: np.ndarray | None = None,
               norm: matplotlib.colors.Normalize | None = None) -> None:
        self.im.set_data(image)
        self.heat.set_visible(heat is not None)
        if heat is not None:
            self.heat.set_data(heat)
            self.heat.set_norm(norm)
        self.ax.set_title(title, fontsize=9)

    def artists(self) -> list:
        return [self.im, self.heat, *self.ax.spines.values(), self.ax.title]


def figure_png(fig: Figure) -> bytes:
    """The whole figure as PNG (see :func:`png_bytes`)."""
    fig.canvas.draw()
    return png_bytes(np.asarray(fig.canvas.buffer_rgba()))
