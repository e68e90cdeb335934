"""The heatmap explorer: what each control setting shows (pure functions, hand-made maps), the cached
model side, the panel (every control redraws the picture and keeps a visible value), and the explorer
on a user's own MVTec-layout folder (its notebook's ``data_roots``)."""

import io
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samllava.core.config import load_profile
from samllava.data import Sample, generate_synthetic, load_dataset
from samllava.evaluate.harness import CoarseMethod
from samllava.report.figures import figure_png
from samllava.notebook.explorer import (
    NO_THRESHOLD, USED_MAP, CoarseCache, CoarseMaps, coarse_view, explorer_data, label_text, nice_step, on_grid,
    slider_range, status_html, status_lines, verdict_text,
)
from samllava.notebook.widgets import ExplorerFigure, HeatmapExplorer, explorer_figure, start_index
from tests.user_folder import write_user_folder

ROOT = Path(__file__).resolve().parents[2]
EXPLORE = ROOT / "notebooks" / "explore_heatmaps.ipynb"
sys.path.insert(0, str(ROOT / "tools"))
from py2nb import convert  # noqa: E402  (tools/py2nb.py)


def _maps(shots=1, label=1, side=8):
    """A hand-made coarse output: a left-to-right ramp 0..0.7, the method's mask on its right quarter."""
    ramp = np.tile(np.linspace(0.0, 0.7, side, dtype=np.float32), (side, 1))
    mask = np.zeros((side, side), bool)
    mask[:, -2:] = True
    sample = Sample(
        Path("/d/cap/test/scratch/003.png"),
        "cap",
        "test",
        label,
        "scratch" if label else "good",
        Path("/d/m.png") if label else None,
        meta={"position": "top left"} if label else {},
    )
    return CoarseMaps(
        category="cap",
        index=3,
        n_images=8,
        sample=sample,
        shots=shots,
        image=np.zeros((side, side, 3)),
        used=ramp,
        used_name="Λ (H := 1)",
        mask=mask,
        score=-0.25,
        score_note="maximum of the decision map s_ctx + log(H)/β",
        image_threshold=None,
        terms={"zero_shot": "inactive: H := 1", "few_shot": "active: backbone, K=1"},
        ground_truth=mask.copy(),
    )


def test_nice_step_and_slider_range():
    assert nice_step(0.07) == pytest.approx(0.0005) and nice_step(1.0) == pytest.approx(0.01)
    assert nice_step(0.12) == pytest.approx(0.001) and nice_step(0.0) == 1e-3
    # the tiny profile's used maps span about 0.01-0.13; the offline zero-shot map 0.53-0.60
    r = slider_range(np.array([0.0123, 0.1311]))
    assert (r.min, r.max, r.step, r.readout_format) == (0.012, 0.132, 0.001, ".3f")
    r = slider_range(np.array([0.5312, 0.5967]))
    assert (r.min, r.max, r.step, r.readout_format) == (0.531, 0.597, 0.0005, ".4f")
    assert (r.max - r.min) / r.step >= 100  # arrow keys move the threshold by a visible step, not 1/100 of 0-1
    flat = slider_range(np.full((4, 4), 0.3))
    assert flat.max > flat.min
    # a value shown on the slider sits on its grid, so the browser has nothing to snap and send back
    assert on_grid(r, 0.56789) == 0.568 and on_grid(r, 0.1) == r.min and on_grid(r, 0.9) == r.max


def test_verdict_and_label():
    assert verdict_text(0.4) == NO_THRESHOLD == "n/a (no calibrated threshold)"
    assert verdict_text(0.4, 0.3).startswith("anomalous") and verdict_text(0.2, 0.3).startswith("normal")
    assert label_text(_maps().sample) == "defect: scratch (top left)"
    assert label_text(_maps(label=0).sample) == "normal"


def test_coarse_view_used_map_level_and_manual():
    m = _maps()
    otsu = coarse_view(m)
    assert (otsu.mask == m.mask).all()  # the method's own M_coarse
    # K > 0: the verdict's hysteresis mask, whose thresholds live on the decision map: none marked here
    assert math.isnan(otsu.threshold) and "verdict" in otsu.mask_rule
    zero = coarse_view(_maps(shots=0))
    assert 0 < zero.threshold < 0.7 and zero.mask_rule == "Otsu (the method's M_coarse)"
    manual = coarse_view(m, threshold=0.45)
    assert (
        manual.threshold == 0.45 and (manual.mask == (m.used > 0.45)).all() and manual.mask_rule == "manual threshold"
    )
    level = np.eye(8, dtype=np.float32)
    lv = coarse_view(m, level=1, level_map=level)
    assert lv.heatmap is level and lv.heatmap_name.startswith("d_1") and (lv.mask == (level > 0.5)).all()
    with pytest.raises(ValueError, match="pass its map"):
        coarse_view(m, level=1)
    with pytest.raises(ValueError, match="support set"):
        coarse_view(_maps(shots=0), level=0, level_map=level)
    flat = coarse_view(m, level=0, level_map=np.zeros((8, 8), np.float32))
    assert math.isnan(flat.threshold) and not flat.mask.any()  # a constant map has no Otsu split


def test_status_lines_read_as_sentences():
    lines = status_lines(coarse_view(_maps()))
    assert lines[0] == "cap, test image 3 (of 0-7, scratch/003.png): defect: scratch (top left)"
    assert lines[1] == (
        "score -0.25 (maximum of the decision map s_ctx + log(H)/β, map maximum 0.7); "
        "verdict: n/a (no calibrated threshold)"
    )
    assert lines[2].startswith("map: Λ (H := 1), K = 1; mask: the verdict's hysteresis mask")
    assert "threshold from the verdict (on the decision map)" in lines[2]
    assert lines[2].endswith("16 px (25 % of the image)")
    assert lines[3] == "terms: zero-shot inactive: H := 1; few-shot active: backbone, K=1"
    assert not any("{" in line for line in lines)  # no raw dict
    assert "verdict: anomalous" in status_lines(coarse_view(_maps()), score_threshold=-1.0)[1]
    calibrated = _maps()
    calibrated.image_threshold = -0.2  # the coarse stage's own threshold, when no other is given
    assert "verdict: normal (score -0.25 < -0.2)" in status_lines(coarse_view(calibrated))[1]
    assert "<div>" in status_html(lines) and "word-break:normal" in status_html(lines)


def test_figure_has_labelled_axes_and_colour_bar():
    fig = explorer_figure(coarse_view(_maps()))
    axes = fig.axes
    assert len(axes) == 5  # image, heatmap, colour bar, mask, ground truth
    assert axes[0].get_xlabel() == "x (px)" and axes[0].get_ylabel() == "y (px)"
    assert axes[2].get_ylabel() == "Λ value"  # the colour bar, in the map's units
    assert axes[0].get_title() == "image 3: defect: scratch (top left)"
    panels = [axes[0], axes[1], axes[3], axes[4]]
    assert all(
        ax.spines["left"].get_visible() and ax.spines["left"].get_edgecolor()[0] < 0.5 for ax in panels
    )  # framed


def test_blitted_redraw_equals_a_full_draw():
    """Only the changing artists are redrawn over a cached background; the picture is the full figure's."""
    f = ExplorerFigure(8)
    f.draw(coarse_view(_maps()), overlay=True).png()
    other = _maps(label=0)
    other.used = other.used[:, ::-1].copy()
    blit = _decode(f.draw(coarse_view(other, threshold=0.3), overlay=False).png())
    full = _decode(figure_png(f.fig))
    assert blit.shape == full.shape and (np.abs(blit.astype(int) - full.astype(int)).max(-1) > 4).sum() <= 8


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = generate_synthetic(
        tmp_path_factory.mktemp("syn"), categories=["fabric", "bottle_cap"], n_train=4, n_test=4, size=64, seed=0
    )
    return CoarseMethod(load_profile("tiny")).coarse, load_dataset(root)


def test_cache_reuses_maps_and_refits_a_changed_support(setup):
    coarse, data = setup
    cache = CoarseCache(coarse, data, 64)
    anomalous = next(i for i, s in enumerate(data["fabric"].test) if s.label == 1)
    m = cache.maps("fabric", anomalous, 1)
    assert m.used.shape == m.mask.shape == m.ground_truth.shape == (64, 64) and m.ground_truth.any()
    assert m.terms["few_shot"].startswith("active") and m.used_name == "H' = H·Λ"
    assert cache.maps("fabric", anomalous, 1) is m  # cached
    d0 = cache.level_map("fabric", anomalous, 1, 0)
    assert d0.shape == (64, 64) and set(m.levels) == {0, 1, 2}  # every level from one pass
    coarse.clear_support()  # someone else (a benchmark) changes the shared coarse stage
    other = cache.maps("fabric", (anomalous + 1) % 4, 1)
    assert other.terms["few_shot"].startswith("active")  # the support set was fitted again
    zero = cache.maps("fabric", 0, 0)
    assert zero.terms["few_shot"].startswith("inactive") and zero.used_name == "H (zero-shot)"
    assert not zero.ground_truth.any() or data["fabric"].test[0].label == 1
    with pytest.raises(ValueError, match="out of range"):
        cache.maps("fabric", 99, 1)
    with pytest.raises(ValueError, match="support set"):
        cache.level_map("fabric", 0, 0, 0)
    cache.warm_text()  # the explorer encodes every category's prompts up front (K = 0 needs them)
    assert len(cache.text) == len(data)


def _pixels(explorer):
    return _decode(explorer.image.value)


def test_every_control_redraws_and_keeps_a_visible_value(setup):
    coarse, data = setup
    ex = HeatmapExplorer(coarse, data, n_levels=3, size=64)
    assert ex.image.value and "verdict: n/a" not in ex.status.value  # drawn at once, K = 1: calibrated
    cat = data[ex.category.value]
    assert ex.index.value == start_index(cat) and cat.test[ex.index.value].label == 1  # it starts on a defect
    areas = {i: cat.load_masks([s], 64).sum() for i, s in enumerate(cat.test) if s.label == 1}
    assert areas[ex.index.value] == max(areas.values())  # the most visible one
    before = _pixels(ex)
    other = [c for c in data if c != ex.category.value][0]
    moves = [
        ("category", other),
        ("index", 2),
        ("shots", 2),
        ("level", 1),
        ("threshold", None),
        ("otsu", True),
        ("overlay", False),
    ]
    for name, value in moves:
        control = getattr(ex, name)
        control.value = (control.min + 3 * control.max) / 4 if value is None else value
        after = _pixels(ex)
        assert after.shape == before.shape and not np.array_equal(after, before), f"moving {name} did not redraw"
        before = after
        assert ex.level.value in [v for _, v in ex.level.options]  # never blank
        assert ex.last_redraw_s > 0
    # the threshold slider spans the shown map, and moving it made the threshold manual
    ex.threshold.value = ex.threshold.max
    assert not ex.otsu.value and "manual threshold" in ex.status.value
    heat = ex.last_view.heatmap
    assert ex.threshold.min <= heat.min() and ex.threshold.max >= heat.max()
    assert ex.threshold.max - ex.threshold.min <= (heat.max() - heat.min()) + 2 * ex.threshold.step
    # another map (K or level) goes back to Otsu; K = 0 shows the used map and disables the level control
    ex.shots.value = 0
    assert ex.otsu.value and ex.level.value == USED_MAP and ex.level.disabled
    assert "K = 0" in ex.status.value and "zero-shot image score" in ex.status.value
    ex.shots.value = 1
    assert not ex.level.disabled
    ex.category.value = "fabric"
    assert ex.index.max == len(data["fabric"].test) - 1 and ex.category.value == "fabric"


def test_explorer_on_a_users_folder(setup, tmp_path):
    """data_roots = {"own": folder}: the user's categories (photos of their own size, no masks) in the panel."""
    coarse, _ = setup
    profile = load_profile("tiny")
    own = write_user_folder(tmp_path / "own")
    data = explorer_data(profile, {"own": str(own)})
    assert sorted(data) == ["bracket", "widget"] and not any(c.has_masks for c in data.values())
    assert sorted(explorer_data(profile, {"own": own, "more": own})) == [
        "more/bracket", "more/widget", "own/bracket", "own/widget"]
    with pytest.raises(ValueError, match=r"data_roots\['own'\] = .*nope"):
        explorer_data(profile, {"own": str(tmp_path / "nope")})
    ex = HeatmapExplorer(coarse, data, n_levels=3, size=64)
    assert ex.image.value and ex.category.value == "bracket" and "verdict: n/a" not in ex.status.value
    assert ex.last_view.maps.ground_truth is None and ex.last_view.maps.sample.label == 1  # starts on a defect
    before = _pixels(ex)
    ex.category.value = "widget"
    ex.shots.value = 2
    assert not np.array_equal(_pixels(ex), before) and "widget" in ex.status.value and "K = 2" in ex.status.value


def test_explore_notebook_is_thin_and_matches_source():
    nb = json.loads(EXPLORE.read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    params = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    assert any(line.startswith("data_roots = {}") for line in params["source"])
    assert any(line.startswith("device = None") for line in params["source"])
    assert not any(re.search(r"^\s*(def|class) ", c, re.M) for c in code)
    assert any("explorer_data(P, data_roots)" in c for c in code)  # the parameter is honoured
    expected = [c.source for c in convert((ROOT / "notebooks" / "src" / f"{EXPLORE.stem}.py").read_text()).cells]
    assert ["".join(c["source"]) for c in nb["cells"]] == expected, "run tools/py2nb.py"
    assert not re.match(r"^\d{2}_", EXPLORE.name)  # not in `samllava reproduce`'s sequence: it runs no benchmark
    book02 = (ROOT / "notebooks" / "02_coarse_localisation.ipynb").read_text()
    assert "heatmap_explorer" not in book02 and EXPLORE.name in book02


@pytest.mark.notebooks
@pytest.mark.slow
def test_explore_notebook_runs_headless_on_a_users_folder(tmp_path):
    import papermill as pm

    own = write_user_folder(tmp_path / "own")
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(str(EXPLORE), str(out), parameters={"profile": "tiny", "data_roots": {"own": str(own)}},
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False, execution_timeout=600)
    outputs = [o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert not any(o.get("output_type") == "error" for o in outputs)
