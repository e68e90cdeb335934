"""The heatmap explorer's view function (what each control setting shows) and the panel's construction."""
import pytest

from samllava.config import load_profile
from samllava.data import generate_synthetic, load_dataset
from samllava.evaluate import CoarseMethod
from samllava.widgets import coarse_view, heatmap_explorer, view_figure


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = generate_synthetic(
        tmp_path_factory.mktemp("syn"), categories=["fabric"], n_train=2, n_test=4, size=64, seed=0
    )
    return CoarseMethod(load_profile("tiny")).coarse, load_dataset(root)


def test_views(setup):
    coarse, data = setup
    cat = data["fabric"]
    anomalous = next(i for i, s in enumerate(cat.test) if s.label == 1)
    v = coarse_view(coarse, cat, anomalous, shots=1, size=64)
    assert v.heatmap.shape == v.mask.shape == (64, 64) and v.ground_truth is not None
    assert v.terms["few_shot"].startswith("active")
    manual = coarse_view(coarse, cat, anomalous, shots=1, threshold=2.0, size=64)
    assert not manual.mask.any() and manual.threshold == 2.0  # above every map value
    level = coarse_view(coarse, cat, anomalous, shots=2, level=0, size=64)
    assert level.heatmap.shape == (64, 64)
    zero = coarse_view(coarse, cat, 0, shots=0, size=64)
    assert zero.terms["few_shot"].startswith("inactive")
    with pytest.raises(ValueError, match="support set"):
        coarse_view(coarse, cat, 0, shots=0, level=0, size=64)
    with pytest.raises(ValueError, match="out of range"):
        coarse_view(coarse, cat, 99, shots=1, size=64)
    assert view_figure(v) is not None


def test_panel_builds_and_refreshes(setup):
    coarse, data = setup
    panel, refresh = heatmap_explorer(coarse, data, n_levels=3, size=64)
    refresh()  # outside a kernel the Output widget is a no-op context
    assert len(panel.children) == 3
