"""Interactive heatmap explorer for JupyterLab (ipywidgets); harmless under papermill.

:func:`coarse_view` computes what one setting of the controls shows (pure, tested);
:func:`heatmap_explorer` wires it to sliders and drop-downs: category, image, K, level and
threshold (Otsu or a manual value).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.filters import threshold_otsu

from . import viz
from .coarse import TextCache, category_phrase, otsu_masks
from .data import CategoryData, sample_support


@dataclass
class CoarseView:
    image: torch.Tensor  # (3, S, S)
    heatmap: np.ndarray  # (S, S) the map shown: H' / Lambda / H, or one level's d_s
    mask: np.ndarray  # (S, S) bool: Otsu or manual threshold
    threshold: float
    ground_truth: np.ndarray | None
    score: float
    terms: dict[str, str]


@torch.no_grad()
def coarse_view(coarse, cat: CategoryData, index: int, shots: int, level: int | None = None,
                threshold: float | None = None, seed: int = 0, size: int = 256,
                category: str | None = None) -> CoarseView:
    """One view: image ``index`` of ``cat.test`` with K=``shots`` support images (0 = zero-shot).

    ``level`` None shows the map the method uses; an integer shows that memory level's raw
    distance d_s (few-shot only). ``threshold`` None uses Otsu (Eq. 1).
    """
    if not 0 <= index < len(cat.test):
        raise ValueError(f"image index {index} out of range: category {cat.category!r} has {len(cat.test)} test images")
    sample = cat.test[index]
    image = cat.load_images([sample], size)
    if shots > 0:
        coarse.set_support(cat.load_images(sample_support(cat, shots, seed), size))
    else:
        coarse.clear_support()
    cache = getattr(coarse, "_text_cache", None) or TextCache(coarse.zero_shot)
    coarse._text_cache = cache
    feats = (
        cache.get(category_phrase(category or cat.category, allow_generic=True)) if coarse.zero_shot_active() else None
    )
    out = coarse(image, feats)
    heat = out.calibrated
    if level is not None:
        if shots == 0:
            raise ValueError("memory levels exist only with a support set (K > 0)")
        heat = coarse.calibrator(image).distances[level]
    heat = heat[0].cpu()  # read on the host (numpy), wherever the stage runs
    if threshold is None:
        mask = otsu_masks(heat[None])[0]
        thr = float(threshold_otsu(heat.numpy())) if float(heat.max() - heat.min()) > 0 else float(heat.max())
    else:
        mask, thr = heat > threshold, float(threshold)
    gt = cat.load_masks([sample], size)[0, 0].numpy().astype(bool) if (cat.has_masks and sample.label == 1) else None
    return CoarseView(image[0], heat.numpy(), mask.numpy(), thr, gt, float(out.score[0]), out.terms)


def view_figure(v: CoarseView):
    """A one-row figure of a :class:`CoarseView`: image, heatmap, mask, ground truth."""
    panels = [v.image, v.heatmap, v.mask] + ([v.ground_truth] if v.ground_truth is not None else [])
    return viz.image_grid([panels], col_titles=["image", "heatmap", f"mask (thr {v.threshold:.2f})", "ground truth"])


def heatmap_explorer(coarse, data: dict[str, CategoryData], n_levels: int, size: int = 256):
    """An ipywidgets control panel over :func:`coarse_view`: returns ``(widget, refresh)``.

    ``n_levels`` is the number of memory levels (``len(profile.fewshot.layers)``). The panel
    draws only when a control changes (in JupyterLab); nothing is drawn into its Output widget
    while a notebook runs headless, where papermill's client can wait forever on Output-widget
    messages. Show a first view with :func:`view_figure`.
    """
    import ipywidgets as w  # optional: only in a Jupyter front end
    import matplotlib.pyplot as plt  # heavy, only when the panel draws
    from IPython.display import display  # optional: only in a Jupyter front end

    cats = list(data)
    category = w.Dropdown(options=cats, description="category")
    index = w.IntSlider(0, 0, len(data[cats[0]].test) - 1, description="image")
    shots = w.Dropdown(options=[0, 1, 2, 4], value=1, description="K")
    level = w.Dropdown(
        options=[("used map", None)] + [(f"level {i} (K > 0)", i) for i in range(n_levels)], description="level"
    )
    otsu = w.Checkbox(True, description="Otsu")
    thr = w.FloatSlider(0.5, min=0.0, max=1.0, step=0.01, description="threshold")
    out = w.Output()

    def refresh(*_):
        index.max = len(data[category.value].test) - 1
        with out:
            out.clear_output(wait=True)
            lvl = level.value if shots.value else None  # levels exist only with a support set
            v = coarse_view(coarse, data[category.value], index.value, shots.value, lvl,
                            None if otsu.value else thr.value, size=size)
            fig = view_figure(v)
            display(fig)
            plt.close(fig)
            print(f"score {v.score:.3f}; terms: {v.terms}")

    for c in (category, index, shots, level, otsu, thr):
        c.observe(refresh, names="value")
    return w.VBox([w.HBox([category, index, shots]), w.HBox([level, otsu, thr]), out]), refresh
