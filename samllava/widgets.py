"""Heatmap explorer for JupyterLab (ipywidgets); it also runs headless under papermill.

Three layers, each tested on its own:

* :class:`CoarseCache` - the model's work for one (category, image, K): the map the method uses,
  its coarse mask, the score and, on demand, each memory level's raw distance d_s
  (:class:`CoarseMaps`). Maps are kept, prompts encoded once per category and a support set fitted
  only when a new map needs another (category, K), so the level, threshold and overlay controls only redraw.
* :func:`coarse_view`, :func:`slider_range`, :func:`status_lines`, :func:`verdict_text` - pure: what one
  setting of the controls shows, the threshold slider's range and the status line.
* :func:`explorer_figure` draws a view: the image (optionally under the heatmap), the heatmap with a
  colour bar in the map's own units and the threshold marked on it, the mask and the ground truth
  (framed). :class:`HeatmapExplorer` wires it to the controls; the first view is drawn by the same
  :meth:`HeatmapExplorer.redraw` the controls call, into an ``ipywidgets.Image`` (no Output widget,
  on which papermill's client can wait forever).
"""
from __future__ import annotations

import contextlib
import html
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import ipywidgets as w
import numpy as np
import torch
from matplotlib.figure import Figure

from .coarse import TextCache, category_phrase, otsu_threshold
from .data import CategoryData, Sample, sample_support
from .viz import Blitter, HeatmapPanel, ImagePanel, MaskPanel, axes_row, to_numpy_image

USED_MAP = -1  # level control value: the map the method uses (H', Lambda or H), not one memory level
NO_THRESHOLD = "n/a (no calibrated threshold)"


# ----------------------------------------------------------------------------- the model side, cached
@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` torch threads (None: unchanged), then restore the caller's setting."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


@dataclass
class CoarseMaps:
    """The coarse stage's output for one test image with K support images (arrays at side S)."""

    category: str
    index: int  # into the category's test list
    n_images: int  # test images in the category
    sample: Sample
    shots: int  # K; 0 = zero-shot
    image: np.ndarray  # (S, S, 3) in [0, 1]
    used: np.ndarray  # (S, S) the map the method uses: H' (Eq. 2), Lambda (H := 1) or H
    used_name: str  # which of the three, in symbols
    mask: np.ndarray  # (S, S) bool, the method's M_coarse: Otsu (Eq. 1), with K > 0 also the support floor
    score: float  # the coarse stage's image score
    score_note: str  # what the score is, in words
    terms: dict[str, str]  # which coarse terms ran (CoarseOutput.terms)
    ground_truth: np.ndarray | None  # (S, S) bool; zeros for normal images; None when the data has no masks
    levels: dict[int, np.ndarray] = field(default_factory=dict)  # memory level -> raw d_s (S, S), filled on demand


def score_note(shots: int) -> str:
    """What the coarse stage's image score is (CoarseLocalizer.forward), in words."""
    return "log of the map's maximum" if shots > 0 else "zero-shot image score"


def used_map_name(shots: int, use_zero_shot: bool) -> str:
    """The symbol of the map the method uses: H without support, H' = H·Λ or Λ (H := 1) with support."""
    if shots == 0:
        return "H (zero-shot)"
    return "H' = H·Λ" if use_zero_shot else "Λ (H := 1)"


class CoarseCache:
    """The explorer's model side: :class:`CoarseMaps` per (category, image, K), computed once.

    The coarse stage holds one support set at a time; it is refitted only when the (category, K)
    of a map not yet in the cache differs from the one fitted (seeded by ``seed``, as in the tables).
    Text features are computed once per category (:class:`samllava.coarse.TextCache`).
    """

    def __init__(self, coarse, data: dict[str, CategoryData], size: int, seed: int = 0, capacity: int = 256) -> None:
        self.coarse, self.data, self.size, self.seed, self.capacity = coarse, data, size, seed, capacity
        self.text = TextCache(coarse.zero_shot)
        self._fitted: tuple[str, int] | None = None  # the (category, K) the coarse stage holds
        self._scales = None
        self._maps: OrderedDict[tuple[str, int, int], CoarseMaps] = OrderedDict()

    @torch.no_grad()
    def warm_text(self) -> None:
        """Encode every category's prompts now (K = 0 needs them; a first K = 0 would otherwise spend a
        redraw on a few hundred sentences through CLIP's text tower)."""
        for category in self.data:
            self.text.get(category_phrase(category, allow_generic=True))

    def _fit(self, category: str, shots: int) -> None:
        # the scales tensor is new at every fit: another user of the same coarse stage (a benchmark
        # in the same notebook) who refits or clears it is noticed, and the support set is fitted again
        scales = self.coarse.calibrator.scales if self.coarse.calibrator is not None else None
        if self._fitted == (category, shots) and scales is self._scales:
            return
        cat = self.data[category]
        if shots > 0:
            self.coarse.set_support(cat.load_images(sample_support(cat, shots, self.seed), self.size))
        else:
            self.coarse.clear_support()
        self._fitted = (category, shots)
        self._scales = self.coarse.calibrator.scales if self.coarse.calibrator is not None else None

    @torch.no_grad()
    def maps(self, category: str, index: int, shots: int) -> CoarseMaps:
        """The coarse output for test image ``index`` of ``category`` with K = ``shots`` (0 = zero-shot)."""
        key = (category, index, shots)
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        cat = self.data[category]
        if not 0 <= index < len(cat.test):
            raise ValueError(f"image index {index} out of range: category {category!r} has {len(cat.test)} test images")
        self._fit(category, shots)
        sample = cat.test[index]
        image = cat.load_images([sample], self.size)
        feats = self.text.get(category_phrase(category, allow_generic=True)) if self.coarse.zero_shot_active() else None
        out = self.coarse(image, feats)
        gt = None
        if cat.has_masks or sample.label == 0:
            gt = cat.load_masks([sample], self.size)[0, 0].numpy().astype(bool)
        maps = CoarseMaps(
            category=category, index=index, n_images=len(cat.test), sample=sample, shots=shots,
            image=to_numpy_image(image[0]), used=out.calibrated[0].float().numpy(),
            used_name=used_map_name(shots, self.coarse.use_zero_shot), mask=out.mask[0].numpy(),
            score=float(out.score[0]),
            score_note=score_note(shots),
            terms=dict(out.terms), ground_truth=gt)
        self._maps[key] = maps
        while len(self._maps) > self.capacity:
            self._maps.popitem(last=False)
        return maps

    @torch.no_grad()
    def level_map(self, category: str, index: int, shots: int, level: int) -> np.ndarray:
        """Memory level ``level``'s raw distance d_s = 1 - max cos (S, S) for that image (K > 0 only)."""
        if shots == 0:
            raise ValueError("memory levels exist only with a support set (K > 0)")
        maps = self.maps(category, index, shots)
        if level not in maps.levels:
            self._fit(category, shots)
            image = torch.from_numpy(maps.image).permute(2, 0, 1)[None].contiguous()
            distances = self.coarse.calibrator(image).distances  # every level from one pass
            maps.levels.update({i: d[0].float().numpy() for i, d in enumerate(distances)})
        if level not in maps.levels:
            raise ValueError(f"memory level {level} does not exist: the memory has {len(maps.levels)} levels")
        return maps.levels[level]


# ----------------------------------------------------------------------------- pure: what a setting shows
@dataclass
class CoarseView:
    """What one setting of the controls shows."""

    maps: CoarseMaps
    heatmap: np.ndarray  # (S, S) the map shown: the used map or one level's d_s
    heatmap_name: str
    mask: np.ndarray  # (S, S) bool
    threshold: float  # the value marked on the colour bar (Otsu's or the manual one); nan for a constant map
    mask_rule: str  # how the mask was made, in words
    mask_title: str  # the same, short, for the figure
    level: int  # USED_MAP or a memory level


def coarse_view(maps: CoarseMaps, level: int = USED_MAP, level_map: np.ndarray | None = None,
                threshold: float | None = None) -> CoarseView:
    """The view of ``maps`` for a level and a threshold.

    ``level`` USED_MAP shows the map the method uses; with ``threshold`` None its mask is the
    method's own M_coarse (Otsu, with K > 0 also the support floor). A memory level shows
    ``level_map`` (that level's raw d_s), thresholded by Otsu. A number as ``threshold`` gives the
    mask ``map > threshold``.
    """
    if level == USED_MAP:
        heat, name = maps.used, maps.used_name
    else:
        if maps.shots == 0:
            raise ValueError("memory levels exist only with a support set (K > 0)")
        if level_map is None:
            raise ValueError(f"level {level}: pass its map (CoarseCache.level_map)")
        heat, name = level_map, f"d_{level} (memory level {level})"
    if threshold is not None:
        mask, thr = heat > threshold, float(threshold)
        rule, title = "manual threshold", f"mask: map > {thr:.3g} (manual)"
    else:
        thr = otsu_threshold(heat)  # nan for a constant map: its mask is empty
        cut = "constant map" if math.isnan(thr) else f"> {thr:.3g}"
        if level == USED_MAP:
            mask = maps.mask
            floor = maps.shots > 0
            rule = "Otsu ∧ support floor (the method's M_coarse)" if floor else "Otsu (the method's M_coarse)"
            title = f"mask: M_coarse (Otsu {cut}{' ∧ floor' if floor else ''})"
        else:
            mask, rule, title = heat > thr, "Otsu", f"mask: map {cut} (Otsu)"
    return CoarseView(maps, heat, name, np.asarray(mask, dtype=bool), thr, rule, title, level)


@dataclass(frozen=True)
class SliderRange:
    min: float
    max: float
    step: float
    decimals: int  # enough to tell two steps apart

    @property
    def readout_format(self) -> str:
        return f".{self.decimals}f"


def nice_step(span: float, steps: int = 100) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``span / steps`` (at least ``steps`` slider positions)."""
    if not span > 0:
        return 1e-3
    raw = span / steps
    exp = math.floor(math.log10(raw))
    for m in (5, 2, 1):
        if m * 10 ** exp <= raw:
            return m * 10 ** exp
    return 10 ** exp


def slider_range(heatmap: np.ndarray, steps: int = 100) -> SliderRange:
    """The threshold slider for ``heatmap``: its min and max (snapped outwards to the step), a step of
    about 1/``steps`` of the span and a readout with enough decimals to tell two steps apart."""
    lo, hi = float(np.min(heatmap)), float(np.max(heatmap))
    step = nice_step(hi - lo, steps)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if hi <= lo:
        hi = lo + step
    decimals = max(0, -math.floor(math.log10(step)))
    return SliderRange(round(lo, decimals), round(hi, decimals), step, decimals)


def on_grid(r: SliderRange, value: float) -> float:
    """``value`` clamped into the slider's range and rounded to its step grid (as the browser would)."""
    steps = round((min(max(value, r.min), r.max) - r.min) / r.step)
    return round(min(r.min + steps * r.step, r.max), r.decimals + 1)


def verdict_text(score: float, threshold: float | None = None) -> str:
    """The image verdict from the coarse score: n/a until a calibrated score threshold exists."""
    if threshold is None:
        return NO_THRESHOLD
    if score >= threshold:
        return f"anomalous (score {score:.3g} ≥ {threshold:.3g})"
    return f"normal (score {score:.3g} < {threshold:.3g})"


def label_text(sample: Sample) -> str:
    """``normal`` or ``defect: <type>`` (with the position the data gives, if any)."""
    if sample.label == 0:
        return "normal"
    where = sample.meta.get("position")
    return f"defect: {sample.defect_type}" + (f" ({where})" if where else "")


def status_lines(view: CoarseView, score_threshold: float | None = None) -> list[str]:
    """The explorer's status, one short line per fact: which image and its label, score and verdict,
    the map and mask shown, and the active coarse terms."""
    m = view.maps
    shown = f"{m.sample.defect_type}/{m.sample.image_path.name}"
    thr = "n/a (constant map)" if math.isnan(view.threshold) else f"{view.threshold:.4g}"
    peak = f", map maximum {float(m.used.max()):.4g}" if m.shots > 0 else ""
    return [
        f"{m.category}, test image {m.index} (of 0-{m.n_images - 1}, {shown}): {label_text(m.sample)}",
        f"score {m.score:.4g} ({m.score_note}{peak}); verdict: {verdict_text(m.score, score_threshold)}",
        f"map: {view.heatmap_name}, K = {m.shots}; mask: {view.mask_rule}, threshold {thr}, {coverage(view.mask)}",
        "terms: " + "; ".join(f"{k.replace('_', '-')} {v}" for k, v in m.terms.items()),
    ]


def coverage(mask: np.ndarray) -> str:
    """``"123 px (0.19 % of the image)"``: a few pixels still read as more than none."""
    n = int(mask.sum())
    return f"{n} px ({100.0 * n / mask.size:.2g} % of the image)"


def status_html(lines: Sequence[str], note: str = "") -> str:
    """Status lines as HTML that wraps between words only; ``note`` in small grey type after them."""
    body = "".join(f"<div>{html.escape(line)}</div>" for line in lines)
    if note:
        body += f'<div style="color:#6b7280;font-size:11px">{html.escape(note)}</div>'
    return f'<div style="line-height:1.4;font-size:13px;overflow-wrap:normal;word-break:normal">{body}</div>'


# ----------------------------------------------------------------------------- drawing
class ExplorerFigure:
    """One row: image (heatmap overlaid), heatmap + colour bar (threshold marked, mask outlined), mask,
    ground truth. Built once per image side; :meth:`draw` only changes data and titles, and :meth:`png`
    redraws only those (:class:`~samllava.viz.Blitter`), which keeps a redraw cheap. A plain
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
        self.truth.update(m.ground_truth, "ground truth", empty_note="normal: no defect" if m.sample.label == 0 else "empty",
                          absent_note="no mask in data")
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
    cores shared with JupyterLab and the browser two threads wait on each other (on a loaded 2-core machine
    the offline profile's image change took 0.7-0.9 s on one thread, 4-7 s on two:
    ``benchmarks/bench_explorer.py --threads``); None leaves torch's setting.
    """

    def __init__(self, coarse, data: dict[str, CategoryData], n_levels: int, size: int = 256,
                 shots: Sequence[int] = (0, 1, 2, 4), seed: int = 0, score_threshold: float | None = None,
                 threads: int | None = 1) -> None:
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
        self.index = w.IntSlider(start, 0, len(first.test) - 1, description="image", continuous_update=False, style=wide)
        self.shots = w.Dropdown(options=[(f"{k} (zero-shot)" if k == 0 else str(k), k) for k in shots],
                                value=1 if 1 in shots else shots[0], description="K (normal shots)", style=wide)
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
        return {"category": self.category, "image": self.index, "K": self.shots, "level": self.level,
                "otsu": self.otsu, "threshold": self.threshold, "overlay": self.overlay}

    def settings(self) -> Settings:
        return Settings(self.category.value, self.index.value, self.shots.value, self.level.value, self.otsu.value,
                        self.threshold.value, self.overlay.value)

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
        s = w.FloatSlider(on_grid(r, value), min=r.min, max=r.max, step=r.step, readout_format=r.readout_format,
                          description="threshold", style={"description_width": "initial"}, layout=w.Layout(width="380px"))
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


def heatmap_explorer(coarse, data: dict[str, CategoryData], n_levels: int, size: int = 256, **kwargs) -> HeatmapExplorer:
    """The explorer over ``data`` (``n_levels`` = ``len(profile.fewshot.layers)``); display ``.widget``."""
    return HeatmapExplorer(coarse, data, n_levels, size, **kwargs)
