"""Heatmap explorer for JupyterLab (ipywidgets); it also runs headless under papermill.

What the explorer shows, cached and pure, is :mod:`samllava.notebook.explorer`; here it is drawn and wired:

* :func:`explorer_figure` draws a view: the image (optionally under the heatmap), the heatmap with a
  colour bar in the map's own units and the threshold marked on it, the mask and the ground truth
  (framed). :class:`HeatmapExplorer` wires it to the controls; the first view is drawn by the same
  :meth:`HeatmapExplorer.redraw` the controls call, into an ``ipywidgets.Image`` (no Output widget,
  on which papermill's client can wait forever).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import ipywidgets as w
import numpy as np
from matplotlib.figure import Figure

from samllava.data import CategoryData
from samllava.notebook.explorer import (
    USED_MAP, CoarseCache, CoarseView, SliderRange, coarse_view, label_text, on_grid, slider_range, status_html,
    status_lines, torch_threads,
)
from samllava.report.figures import Blitter, HeatmapPanel, ImagePanel, MaskPanel, axes_row


# ----------------------------------------------------------------------------- drawing
class ExplorerFigure:
    """One row: image (heatmap overlaid), heatmap + colour bar (threshold marked, mask outlined), mask,
    ground truth. Built once per image side; :meth:`draw` only changes data and titles, and :meth:`png`
    redraws only those (:class:`~samllava.report.figures.Blitter`), which keeps a redraw cheap. A plain
    :class:`~matplotlib.figure.Figure` (not pyplot's): a notebook never shows it by itself."""

    def __init__(self, side: int) -> None:
        self.side = side
        self.fig, (ax_img, ax_heat, ax_mask, ax_gt), cax = axes_row(4, colourbar_after=1)
        self.image, self.heatmap = ImagePanel(ax_img, side), HeatmapPanel(self.fig, ax_heat, cax, side)
        self.mask, self.truth = MaskPanel(ax_mask, side), MaskPanel(ax_gt, side)
        panels = (self.image, self.heatmap, self.mask, self.truth)
        self.blitter = Blitter(self.fig, lambda: [a for p in panels for a in p.artists()])

    def draw(self, view: CoarseView, overlay: bool = True) -> "ExplorerFigure":
        m = view.maps
        norm = self.heatmap.update(view.heatmap, view.heatmap_name, view.threshold, view.mask)
        self.image.update(m.image, f"image {m.index}: {label_text(m.sample)}", view.heatmap if overlay else None, norm)
        self.mask.update(view.mask, view.mask_title, empty_note="empty mask")
        self.truth.update(
            m.ground_truth,
            "ground truth",
            empty_note="normal: no defect" if m.sample.label == 0 else "empty",
            absent_note="no mask in data",
        )
        return self

    def png(self) -> bytes:
        return self.blitter.png()


def explorer_figure(view: CoarseView, overlay: bool = True) -> Figure:
    """The explorer's figure of ``view`` (see :class:`ExplorerFigure`)."""
    return ExplorerFigure(view.heatmap.shape[0]).draw(view, overlay).fig


# ----------------------------------------------------------------------------- the panel
def start_index(cat: CategoryData, side: int = 64) -> int:
    """The first view's test image: the defect with the largest ground truth (the first defect without
    masks, image 0 without defects), so that a student starts on something visible."""
    defects = [i for i, s in enumerate(cat.test) if s.label == 1]
    if not defects:
        return 0
    if not cat.has_masks:
        return defects[0]
    areas = cat.load_masks([cat.test[i] for i in defects], side).flatten(1).sum(1)
    return defects[int(areas.argmax())]


@dataclass
class Settings:
    """The controls' values."""

    category: str
    index: int
    shots: int
    level: int = USED_MAP
    otsu: bool = True
    threshold: float = 0.0
    overlay: bool = True


class HeatmapExplorer:
    """Controls (category, image, K, memory level, Otsu / threshold, overlay) over one figure and a status line.

    ``widget`` is the panel to display. Every control change calls :meth:`redraw`, which also drew the
    first view; :attr:`last_redraw_s` is the time the last redraw took (model, figure and PNG).
    ``score_threshold`` (a calibrated image-score threshold) turns the verdict from n/a into a decision.
    ``threads``: torch threads for a redraw's model work. One image is fastest on one thread, and on two
    cores shared with JupyterLab and the browser two threads wait on each other
    (``benchmarks/bench_explorer.py --threads``); None leaves torch's setting.
    """

    def __init__(
        self,
        coarse,
        data: dict[str, CategoryData],
        n_levels: int,
        size: int = 256,
        shots: Sequence[int] = (0, 1, 2, 4),
        seed: int = 0,
        score_threshold: float | None = None,
        threads: int | None = 1,
    ) -> None:
        self.cache = CoarseCache(coarse, data, size, seed)
        self.data, self.n_levels, self.score_threshold, self.threads = data, n_levels, score_threshold, threads
        cats = list(data)
        max_k = min(len(c.train) for c in data.values())
        shots = [k for k in shots if k <= max_k]
        if 0 in shots:
            with torch_threads(threads):
                self.cache.warm_text()
        first = data[cats[0]]
        start = start_index(first)
        wide = {"description_width": "initial"}
        self._syncing = False
        self.category = w.Dropdown(options=cats, value=cats[0], description="category", style=wide)
        self.index = w.IntSlider(
            start, 0, len(first.test) - 1, description="image", continuous_update=False, style=wide
        )
        self.shots = w.Dropdown(
            options=[(f"{k} (zero-shot)" if k == 0 else str(k), k) for k in shots],
            value=1 if 1 in shots else shots[0],
            description="K (normal shots)",
            style=wide,
        )
        self.level = w.Dropdown(options=self._level_options(), value=USED_MAP, description="map", style=wide)
        self.otsu = w.Checkbox(True, description="Otsu threshold", indent=False)
        self.threshold = self._threshold_slider(SliderRange(0.0, 1.0, 0.01, 2), 0.5)
        self.overlay = w.Checkbox(True, description="heatmap on image", indent=False)
        self.status = w.HTML()
        self.image = w.Image(format="png")
        for name in ("category", "index", "shots", "level", "otsu", "overlay", "status", "image"):
            getattr(self, name).add_class(f"samllava-explorer-{name}")
        self._row = w.HBox([self.level, self.otsu, self.threshold, self.overlay])
        self.widget = w.VBox([w.HBox([self.category, self.index, self.shots]), self._row, self.status, self.image])
        self.widget.add_class("samllava-explorer")
        self.last_redraw_s = 0.0
        self.last_view: CoarseView | None = None
        self._shown_threshold = self.threshold.value
        self._figure: ExplorerFigure | None = None
        for c in (self.category, self.index, self.shots, self.level, self.otsu, self.overlay):
            c.observe(self._changed, names="value")
        self.redraw()

    def _level_options(self) -> list[tuple[str, int]]:
        return [("used map (H', Λ or H)", USED_MAP)] + [(f"memory level {i}: d_{i}", i) for i in range(self.n_levels)]

    @property
    def controls(self) -> dict[str, w.Widget]:
        return {
            "category": self.category,
            "image": self.index,
            "K": self.shots,
            "level": self.level,
            "otsu": self.otsu,
            "threshold": self.threshold,
            "overlay": self.overlay,
        }

    def settings(self) -> Settings:
        return Settings(
            self.category.value,
            self.index.value,
            self.shots.value,
            self.level.value,
            self.otsu.value,
            self.threshold.value,
            self.overlay.value,
        )

    def _changed(self, change) -> None:
        if self._syncing:
            return
        owner = change["owner"]
        if owner not in self.controls.values():
            return  # a late message from a replaced threshold slider
        if owner is self.threshold:
            if self.otsu.value and abs(change["new"] - self._shown_threshold) < self.threshold.step / 2:
                return  # the browser's rounding of the value shown, not a move
            self._sync(lambda: setattr(self.otsu, "value", False))  # moving the slider means a manual threshold
        elif owner in (self.shots, self.level):
            self._sync(lambda: setattr(self.otsu, "value", True))  # another kind of map, other units: Otsu again
        self.redraw()

    def _sync(self, update) -> None:
        """Change controls from code without triggering redraws."""
        self._syncing = True
        try:
            update()
        finally:
            self._syncing = False

    def _sync_controls(self) -> None:
        n = len(self.data[self.category.value].test)
        if self.index.max != n - 1:
            with self.index.hold_sync():
                self.index.max = n - 1  # clamps the value
        zero_shot = self.shots.value == 0
        if zero_shot and self.level.value != USED_MAP:
            self.level.value = USED_MAP  # levels exist only with a support set: show what is drawn
        self.level.disabled = zero_shot

    def _threshold_slider(self, r: SliderRange, value: float) -> w.FloatSlider:
        s = w.FloatSlider(
            on_grid(r, value),
            min=r.min,
            max=r.max,
            step=r.step,
            readout_format=r.readout_format,
            description="threshold",
            style={"description_width": "initial"},
            layout=w.Layout(width="380px"),
        )
        s.add_class("samllava-explorer-threshold")
        s.observe(self._changed, names="value")
        return s

    def _set_slider(self, view: CoarseView) -> None:
        """The slider spans the shown map (and a manual value outside it); with Otsu it shows Otsu's value.

        A new range means a new slider, born with its range, step and value: changing those of a shown
        slider races in the browser, which may clamp the new value into the old range and send it back
        as if the user had moved it. The value always sits on the step grid, so nothing is snapped.
        """
        s = self.threshold
        manual = None if self.otsu.value else s.value
        r = slider_range(view.heatmap if manual is None else np.append(view.heatmap.ravel(), manual))
        value = view.threshold if manual is None else manual
        value = on_grid(r, value if math.isfinite(value) else s.value)
        if (s.min, s.max, s.step) != (r.min, r.max, r.step):
            self.threshold = self._threshold_slider(r, value)
            self._row.children = [self.threshold if c is s else c for c in self._row.children]
            s.close()
        elif s.value != value:
            s.value = value
        self._shown_threshold = self.threshold.value

    def view(self) -> CoarseView:
        """The view the current settings show (computing or reusing the model's maps)."""
        s = self.settings()
        maps = self.cache.maps(s.category, s.index, s.shots)
        level_map = self.cache.level_map(s.category, s.index, s.shots, s.level) if s.level != USED_MAP else None
        return coarse_view(maps, s.level, level_map, None if s.otsu else s.threshold)

    def figure(self) -> Figure:
        """A new figure of the current view (for saving; the panel's own figure is reused between redraws)."""
        return explorer_figure(self.view(), overlay=self.overlay.value)

    def redraw(self, *_) -> None:
        """Bring the dependent controls in line, then draw the figure and the status line."""
        start = time.perf_counter()
        self._sync(self._sync_controls)
        with torch_threads(self.threads):
            v = self.view()
        self._sync(lambda: self._set_slider(v))
        if self._figure is None or self._figure.side != v.heatmap.shape[0]:
            self._figure = ExplorerFigure(v.heatmap.shape[0])
        png = self._figure.draw(v, overlay=self.overlay.value).png()
        self.last_view, self.last_redraw_s = v, time.perf_counter() - start
        self.image.value = png
        self.status.value = status_html(status_lines(v, self.score_threshold), f"drawn in {self.last_redraw_s:.2f} s")


def heatmap_explorer(
    coarse, data: dict[str, CategoryData], n_levels: int, size: int = 256, **kwargs
) -> HeatmapExplorer:
    """The explorer over ``data`` (``n_levels`` = ``len(profile.fewshot.layers)``); display ``.widget``."""
    return HeatmapExplorer(coarse, data, n_levels, size, **kwargs)
