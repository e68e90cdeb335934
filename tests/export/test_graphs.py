"""The graphs' parts compute what the torch stages compute (in torch, before any export)."""
import pytest
import torch
import torch.nn.functional as F

from samllava.coarse.memory import calibration_scores
from samllava.coarse.nearest import min_cosine_distance
from samllava.coarse.zero_shot import gaussian_blur_maps
from samllava.export.graphs import GaussianBlur, LeaveOneOut, chunks, nearest_distance


@pytest.mark.parametrize("sigma, side", [(2.0, 64), (4.0, 256), (4.0, 8), (0.7, 32)])
def test_blur_is_gaussian_blur_maps(sigma, side):
    maps = torch.rand(3, side, side)
    torch.testing.assert_close(GaussianBlur(sigma, side)(maps), gaussian_blur_maps(maps, sigma), atol=1e-6, rtol=1e-5)


def test_nearest_distance_in_chunks_is_min_cosine_distance():
    query = F.normalize(torch.randn(2, 50, 16), dim=-1)
    memory = F.normalize(torch.randn(1000, 16), dim=-1)
    want = min_cosine_distance(query, memory)
    for size in (64, 1000, 4096):
        torch.testing.assert_close(nearest_distance(query, chunks(memory, size)), want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("with_term", [False, True])
def test_leave_one_out_is_calibration_scores(with_term):
    n, side, grids, widths = 5, 32, [(8, 8), (4, 4)], [12, 20]
    held = [torch.rand(n, *g) for g in grids]
    features = [F.normalize(torch.randn(n, g[0] * g[1], c), dim=-1) for g, c in zip(grids, widths)]
    queries = [F.normalize(torch.randn(3, g[0] * g[1], c), dim=-1) for g, c in zip(grids, widths)]
    scales = torch.tensor([0.3, 0.5])
    term = torch.randn(n, side, side) if with_term else None
    want = calibration_scores(held, features, queries, scales, side, term)  # (n, B)
    got = LeaveOneOut(held, features, scales, side, term, per_product=2)(queries)  # (B, n)
    torch.testing.assert_close(got, want.t(), atol=1e-5, rtol=1e-5)
