"""What the heatmap explorer shows (:mod:`samllava.notebook.widgets` draws it and wires the controls).

* :class:`CoarseCache` - the model's work for one (category, image, K): the map the method uses,
  its coarse mask, the score, the verdict and, on demand, each memory level's raw distance d_s
  (:class:`CoarseMaps`). Maps are kept, prompts encoded once per category and a support set fitted
  only when a new map needs another (category, K), so the level, threshold and overlay controls only redraw.
* :func:`coarse_view`, :func:`slider_range`, :func:`status_lines`, :func:`verdict_text` - pure: what one
  setting of the controls shows, the threshold slider's range and the status line.
* :func:`explorer_data` - what it explores: your own MVTec-layout folders (``data_roots``), else the
  profile's synthetic evaluation set.
"""

from __future__ import annotations

import contextlib
import html
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from samllava.coarse import TextCache, category_phrase, otsu_threshold
from samllava.core.config import Profile
from samllava.data import CategoryData, Sample, load_dataset, sample_support
from samllava.notebook.tables.data import synthetic
from samllava.report.figures import to_numpy_image

USED_MAP = -1  # level control value: the map the method uses (H', Lambda or H), not one memory level
NO_THRESHOLD = "n/a (no calibrated threshold)"


# ----------------------------------------------------------------------------- the data explored
def explorer_data(profile: Profile, data_roots: dict[str, str] | None = None) -> dict[str, CategoryData]:
    """The categories the explorer offers: every data set of ``data_roots`` (``{"own": "/path/to/folder"}``:
    a folder of MVTec-layout categories, one category folder, or VisA), its categories named as in the
    folder (``<root name>/<category>`` when several roots are given); without roots, the profile's
    synthetic evaluation set. A folder that does not load, or a category without test images, raises
    naming the root."""
    if not data_roots:
        return synthetic(profile, "eval")
    out: dict[str, CategoryData] = {}
    for name, root in data_roots.items():
        where = f"data_roots[{name!r}] = {root}"
        try:
            data = load_dataset(root)
        except (ValueError, FileNotFoundError, NotADirectoryError) as err:
            raise ValueError(f"{where}: {err}") from None
        for category, cat in data.items():
            if not cat.test:
                raise ValueError(f"{where}: category {category!r} has no test images (test/<good|defect>/*.png)")
            out[f"{name}/{category}" if len(data_roots) > 1 else category] = cat
    return out


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
    mask: np.ndarray  # (S, S) bool, the method's M_coarse: Otsu (Eq. 1); with K > 0 the verdict's hysteresis mask
    score: float  # the coarse stage's image score
    score_note: str  # what the score is, in words
    image_threshold: float | None  # the verdict's calibrated image threshold (K > 0), else None
    terms: dict[str, str]  # which coarse terms ran (CoarseOutput.terms)
    ground_truth: np.ndarray | None  # (S, S) bool; zeros for normal images; None when the data has no masks
    levels: dict[int, np.ndarray] = field(default_factory=dict)  # memory level -> raw d_s (S, S), filled on demand


def score_note(shots: int) -> str:
    """What the coarse stage's image score is (CoarseLocalizer.forward), in words."""
    return "maximum of the decision map s_ctx + log(H)/β" if shots > 0 else "zero-shot image score"


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
            category=category,
            index=index,
            n_images=len(cat.test),
            sample=sample,
            shots=shots,
            image=to_numpy_image(image[0]),
            used=out.calibrated[0].float().cpu().numpy(),
            used_name=used_map_name(shots, self.coarse.use_zero_shot),
            mask=out.mask[0].cpu().numpy(),
            score=float(out.score[0]),
            score_note=score_note(shots),
            image_threshold=None if out.verdict is None else float(out.verdict.image),
            terms=dict(out.terms),
            ground_truth=gt,
        )
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
            maps.levels.update({i: d[0].float().cpu().numpy() for i, d in enumerate(distances)})
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


def coarse_view(
    maps: CoarseMaps, level: int = USED_MAP, level_map: np.ndarray | None = None, threshold: float | None = None
) -> CoarseView:
    """The view of ``maps`` for a level and a threshold.

    ``level`` USED_MAP shows the map the method uses; with ``threshold`` None its mask is the
    method's own M_coarse (Otsu without support; with K > 0 the verdict's hysteresis mask, empty on
    an image judged normal). A memory level shows
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
    elif level == USED_MAP and maps.shots > 0:  # the coarse stage's own mask: no Otsu on a calibrated map
        mask, title = maps.mask, "mask: M_coarse (verdict)"
        rule = "the verdict's hysteresis mask (the method's M_coarse)"
        thr = math.nan  # its thresholds are on the decision map, not on the map shown: none to mark
    else:
        thr = otsu_threshold(heat)  # nan for a constant map: its mask is empty
        cut = "constant map" if math.isnan(thr) else f"> {thr:.3g}"
        if level == USED_MAP:
            mask, rule, title = maps.mask, "Otsu (the method's M_coarse)", f"mask: M_coarse (Otsu {cut})"
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
        if m * 10**exp <= raw:
            return m * 10**exp
    return 10**exp


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
    the map and mask shown, and the active coarse terms. ``score_threshold`` None: the coarse stage's
    calibrated image threshold (K > 0; n/a zero-shot)."""
    m = view.maps
    shown = f"{m.sample.defect_type}/{m.sample.image_path.name}"
    thr = "n/a (constant map)" if math.isnan(view.threshold) else f"{view.threshold:.4g}"
    if view.level == USED_MAP and m.shots > 0 and math.isnan(view.threshold):
        thr = "from the verdict (on the decision map)"
    if score_threshold is None:
        score_threshold = m.image_threshold
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
