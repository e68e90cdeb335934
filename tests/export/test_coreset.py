"""The coreset that caps an export's memory, and the verdict recalibrated on it."""
import pytest
import torch
import torch.nn.functional as F

from samllava.diagnose.run import fit_support
from samllava.export.coreset import _recalibrated, greedy_coreset, support_tables


def _brute_force(x: torch.Tensor, n: int) -> list[int]:
    chosen = [0]
    while len(chosen) < n:
        nearest = (x @ x[chosen].t()).amax(1)  # similarity to the nearest chosen row
        chosen.append(int(nearest.argmin()))
    return chosen


def test_greedy_coreset_is_k_center_greedy():
    x = F.normalize(torch.randn(300, 8), dim=-1)
    idx = greedy_coreset(x, 40)
    assert idx.tolist() == _brute_force(x, 40) and len(set(idx.tolist())) == 40
    radius = [float((1 - x @ x[greedy_coreset(x, n)].t()).amax(1).amin()) for n in (5, 20, 80)]
    assert radius == sorted(radius)  # not more than before: more centres cover at least as well
    covering = [float((1 - x @ x[greedy_coreset(x, n)].t()).amin(1).amax()) for n in (5, 20, 80)]
    assert covering == sorted(covering, reverse=True)
    assert greedy_coreset(x, 500).tolist() == list(range(300))


@pytest.fixture
def fitted(tiny, held_out, request):
    """``tiny`` with the support of the first held-out category; calibration normals of the second when asked."""
    calibration = held_out[1] / "train" / "good" if request.param else None
    fit_support(tiny, held_out[0] / "train" / "good", 64, cache=False, calibration=calibration)
    return tiny


@pytest.mark.parametrize("fitted", [False, True], indirect=True, ids=["leave-one-out", "calibration set"])
def test_recalibration_on_the_whole_memory_is_torchs_verdict(fitted):
    coarse = fitted.coarse
    text = fitted.text(None)[0]
    tables = support_tables(coarse, text, cap=None)
    assert not tables.capped and tables.verdict == coarse.verdict(text)
    keep = [torch.arange(m.shape[0]) for m in coarse.calibrator.memory]
    heatmap = coarse.zero_shot(coarse.calibrator.calibration_images, text)[0]  # the tiny profile's CLIP term
    term = coarse.decision_map(heatmap, torch.zeros_like(heatmap))
    verdict, held = _recalibrated(coarse, list(coarse.calibrator.memory), keep, term)
    assert verdict.rule == tables.verdict.rule and verdict.n_normals == tables.verdict.n_normals
    assert verdict.image == pytest.approx(tables.verdict.image, rel=1e-5)
    assert verdict.pixel == pytest.approx(tables.verdict.pixel, rel=1e-5)
    if held is not None:
        for a, b in zip(held, coarse.calibrator.held_out_grids):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fitted", [False], indirect=True, ids=["leave-one-out"])
def test_a_capped_memory_is_a_coreset_with_its_own_verdict(fitted):
    coarse = fitted.coarse
    text = fitted.text(None)[0]
    full = support_tables(coarse, text, cap=None)
    capped = support_tables(coarse, text, cap=40)
    assert capped.capped and [m.shape[0] for m in capped.memory] == [40] * len(full.memory)
    assert capped.patches == [m.shape[0] for m in full.memory]
    for small, whole in zip(capped.held, full.held):  # a subset of the others' patches is never nearer
        assert (small >= whole - 1e-6).all()
    assert capped.verdict.rule == "leave-one-out" and capped.verdict.image >= full.verdict.image - 1e-6
