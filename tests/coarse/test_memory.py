import math

import pytest
import torch

from samllava.coarse.backbone import CachedExtractor, FeatureExtractor
from samllava.coarse import memory as memory_module
from samllava.coarse import nearest as nearest_module
from samllava.coarse.nearest import held_out_distances, min_cosine_distance
from samllava.coarse.memory import (
    FewShotCalibrator, calibration_indices, knn_anomaly_map, normal_scale,
)


class PixelFeatures(FeatureExtractor):
    """Each pixel's RGB is its patch feature; two identical levels (hand-made features)."""

    def __init__(self, size: int = 4) -> None:
        super().__init__(size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def extract(self, x):
        return [x, x]


def unit(deg: float) -> torch.Tensor:
    return torch.tensor([math.cos(math.radians(deg)), math.sin(math.radians(deg))])


def image(*colours) -> torch.Tensor:
    """(3, 2, 2) image from four RGB triples, row-major."""
    return torch.tensor(colours, dtype=torch.float32).T.reshape(3, 2, 2)


def test_min_cosine_distance_hand_made():
    memory = torch.stack([unit(0), unit(90)])
    query = torch.stack([unit(0), unit(45), unit(90), unit(30)])[None]  # (1, 4, 2)
    d = min_cosine_distance(query, memory)
    expected = torch.tensor([0.0, 1 - math.cos(math.radians(45)), 0.0, 1 - math.cos(math.radians(30))])
    assert torch.allclose(d[0], expected, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_tiled_similarities_equal_one_product(monkeypatch, k):
    # tiles of a few rows and columns (uneven last tiles, own columns cut by a tile edge) give what one
    # (rows, M) product gives
    torch.manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(2, 7, 5), dim=-1)
    memory = torch.nn.functional.normalize(torch.randn(k, 12, 5), dim=-1)  # K images of a 3x4 grid
    flat = memory.reshape(-1, 5)
    whole = (1 - (query @ flat.t()).amax(-1)).clamp_min(0)
    held = held_out_distances(memory, (3, 4))
    for columns, tile in ((flat.shape[0], flat.shape[0] * 3), (5, 15), (5, 1), (7, 10)):
        monkeypatch.setattr(nearest_module, "TILE_COLUMNS", columns)
        assert torch.allclose(min_cosine_distance(query, flat, tile=tile), whole, atol=1e-6)
        assert torch.allclose(held_out_distances(memory, (3, 4), tile=tile), held, atol=1e-6)
    # the reference for held_out_distances: the full masked matrix
    idx = torch.arange(k * 12)
    if k > 1:
        excluded = (idx // 12)[:, None] == (idx // 12)[None, :]
    else:
        excluded = (
            torch.maximum(
                ((idx // 4)[:, None] - (idx // 4)[None, :]).abs(), ((idx % 4)[:, None] - (idx % 4)[None, :]).abs()
            )
            <= 1
        )
    ref = (1 - (flat @ flat.t()).masked_fill(excluded, float("-inf")).amax(-1)).clamp_min(0).view(k, 3, 4)
    assert torch.allclose(held, ref, atol=1e-6)
    # a subset of held-out images: their rows of the full result
    some = torch.tensor([k - 1, 0])
    assert torch.allclose(held_out_distances(memory, (3, 4), queries=some), ref[some], atol=1e-6)


def test_calibration_indices_bound_the_held_out_work():
    assert calibration_indices(4).tolist() == [0, 1, 2, 3]
    big = calibration_indices(200, n_max=32)
    assert len(big) == 32 and big[0] == 0 and big[-1] == 199 and len(set(big.tolist())) == 32


def test_fit_in_chunks_equals_one_pass(monkeypatch):
    torch.manual_seed(1)
    support = torch.rand(5, 3, 4, 4)
    one = FewShotCalibrator(PixelFeatures()).fit(support)
    monkeypatch.setattr(memory_module, "SUPPORT_CHUNK", 2)
    monkeypatch.setattr(memory_module, "MAX_CALIBRATION_IMAGES", 3)
    chunked = FewShotCalibrator(PixelFeatures()).fit(support)
    assert all(torch.equal(a, b) for a, b in zip(one.memory, chunked.memory))
    assert one.held_out_s_ctx.shape == (5, 4, 4) and chunked.held_out_s_ctx.shape == (3, 4, 4)
    assert torch.equal(chunked.calibration_images, support[calibration_indices(5, 3)])


def test_fit_from_image_files_reads_chunks_and_equals_the_tensor(monkeypatch, tmp_path):
    from PIL import Image

    from samllava.data import ImageFiles, load_image

    rng = torch.Generator().manual_seed(2)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((torch.rand(4, 4, 3, generator=rng) * 255).byte().numpy()).save(paths[-1])
    files = ImageFiles(paths, 4)
    support = torch.stack([load_image(f, 4) for f in paths])
    monkeypatch.setattr(memory_module, "SUPPORT_CHUNK", 2)
    read = []
    getitem = ImageFiles.__getitem__
    monkeypatch.setattr(ImageFiles, "__getitem__", lambda self, i: read.append(i) or getitem(self, i))
    lazy = FewShotCalibrator(CachedExtractor(PixelFeatures())).fit(files)  # a wrapper has no preprocess of its own
    whole = FewShotCalibrator(PixelFeatures()).fit(support)
    assert [i for i in read if isinstance(i, slice)] == [slice(0, 2), slice(2, 4), slice(4, 6)]  # never all at once
    assert all(torch.equal(a, b) for a, b in zip(lazy.memory, whole.memory))
    assert torch.equal(lazy.held_out_s_ctx, whole.held_out_s_ctx)
    assert torch.equal(lazy.calibration_images, support) and lazy.support_size == 5
    with pytest.raises(ValueError, match="no support images"):
        FewShotCalibrator(PixelFeatures()).fit(ImageFiles([], 4))


def test_normal_scale_leave_one_image_out():
    # Image i holds two almost identical patches; they must not match each other.
    memory = torch.stack([torch.stack([unit(a), unit(a + 1)]) for a in (0, 20, 50)])  # (3, 2, 2)
    # NN distances: 1-cos20, 1-cos19, 1-cos19, 1-cos20, 1-cos29, 1-cos30 -> lower median 1-cos20.
    assert math.isclose(normal_scale(memory, (1, 2)).item(), 1 - math.cos(math.radians(20)), rel_tol=1e-4)


def test_normal_scale_single_image_excludes_neighbourhood():
    memory = torch.stack([unit(0), unit(1), unit(40), unit(45)])[None]  # K=1, grid 1x4
    # radius 1: p0->p2 (40), p1->p3 (44), p2->p0 (40), p3->p1 (44): lower median 1-cos40.
    assert math.isclose(normal_scale(memory, (1, 4), 1).item(), 1 - math.cos(math.radians(40)), rel_tol=1e-4)
    # radius 0 (self only): adjacent near-duplicates give 1-cos1: the reason for radius 1.
    assert math.isclose(normal_scale(memory, (1, 4), 0).item(), 1 - math.cos(math.radians(1)), rel_tol=1e-3)
    with pytest.raises(ValueError, match="no patch outside radius 1"):
        normal_scale(memory[:, :3], (1, 3), 1)


def test_calibrator_distances_hand_made():
    red, green, blue, yellow = (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)
    support = torch.stack([image(red, red, green, green), image(red, green, red, green)])
    cal = FewShotCalibrator(PixelFeatures(2), sharpness=4.0).fit(support)
    assert cal.support_size == 2 and len(cal.memory) == 2 and cal.memory[0].shape == (8, 3)
    assert torch.allclose(cal.scales, torch.full((2,), cal.eps))  # every patch has an identical twin elsewhere
    query = torch.stack([image(green, red, green, red), image(yellow, blue, red, green)])
    out = cal(query)
    d = out.distances[0]
    assert d.shape == (2, 2, 2)
    assert torch.allclose(d[0], torch.zeros(2, 2), atol=1e-6)  # query patches equal to support patches
    assert torch.allclose(d[1], torch.tensor([[1 - 2 ** -0.5, 1.0], [0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(out.s_ctx, torch.stack([dd / s for dd, s in zip(out.distances, cal.scales)]).mean(0))


def test_lambda_monotone_in_distance():
    torch.manual_seed(0)
    support = torch.rand(3, 3, 8, 8)
    cal = FewShotCalibrator(PixelFeatures(8), sharpness=4.0).fit(support)
    assert (cal.scales > cal.eps).all()
    out = cal(torch.rand(2, 3, 8, 8))
    order = out.s_ctx.flatten().argsort()
    lam = out.lam.flatten()[order]
    assert (lam[1:] >= lam[:-1]).all() and lam[-1] > lam[0]
    assert torch.allclose(out.lam, torch.sigmoid(4.0 * (out.s_ctx - 1)))
    # A query identical to the support has d = 0 everywhere: Lambda = sigmoid(-beta), suppressed.
    assert torch.allclose(cal(support).lam, torch.sigmoid(torch.tensor(-4.0)).expand(3, 8, 8), atol=1e-5)


def test_calibrator_errors():
    cal = FewShotCalibrator(PixelFeatures(4))
    with pytest.raises(RuntimeError, match="call fit"):
        cal(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="no support images"):
        cal.fit(torch.rand(0, 3, 4, 4))
    cal.fit(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="query images are 6 px but the support set was 4 px"):
        cal(torch.rand(1, 3, 6, 6))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cal.fit(torch.rand(2, 3, 4, 4) * 255)
    cal.clear()
    assert not cal.fitted and cal.support_size == 0
    with pytest.raises(RuntimeError, match="call fit"):
        cal(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="sharpness"):
        FewShotCalibrator(PixelFeatures(4), sharpness=0)


def test_knn_baseline():
    red, green, blue = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    support = image(red, red, green, green)[None]
    query = torch.stack([image(green, red, green, red), image(red, blue, red, red)])
    maps, scores = knn_anomaly_map(PixelFeatures(2), support, query)
    assert maps.shape == (2, 2, 2) and scores.shape == (2,)
    assert torch.allclose(maps[0], torch.zeros(2, 2), atol=1e-6)
    assert torch.allclose(maps[1], torch.tensor([[0.0, 1.0], [0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(scores, torch.tensor([0.0, 1.0]), atol=1e-6)
    with pytest.raises(ValueError, match="support set is 2 px"):
        knn_anomaly_map(PixelFeatures(2), support, torch.rand(1, 3, 4, 4))


def test_calibration_scores_put_the_test_image_in_the_held_out_memory():
    # full conformal: a held-out support image is scored against the other supports and the test image,
    # K images as the test image is scored against K
    from samllava.coarse.memory import upsample

    g = torch.Generator().manual_seed(3)
    support, query = torch.rand(4, 3, 4, 4, generator=g), torch.rand(3, 3, 4, 4, generator=g)
    cal = FewShotCalibrator(PixelFeatures()).fit(support)
    got = cal.scores_with(query)  # (n_cal, B)
    assert got.shape == (4, 3)
    sup, qf = memory_module.patch_features(cal.extractor(support)), memory_module.patch_features(cal.extractor(query))
    for i in range(4):
        for b in range(3):
            maps = []
            for s_lvl, q_lvl, sc in zip(sup, qf, cal.scales):
                memory = torch.cat([s_lvl[[j for j in range(4) if j != i]].reshape(-1, s_lvl.shape[-1]), q_lvl[b]])
                maps.append(upsample(min_cosine_distance(s_lvl[i:i + 1], memory).view(1, 4, 4), 4) / sc)
            torch.testing.assert_close(got[i, b], torch.stack(maps).mean(0).max())
    # never above the held-out score itself (a larger memory only lowers a distance)
    assert (got <= cal.held_out_s_ctx.flatten(1).amax(1)[:, None] + 1e-6).all()


def test_other_normal_images_calibrate_as_test_images_are_scored():
    g = torch.Generator().manual_seed(4)
    support, extra = torch.rand(3, 3, 4, 4, generator=g), torch.rand(5, 3, 4, 4, generator=g)
    cal = FewShotCalibrator(PixelFeatures()).fit(support, calibration=extra)
    assert not cal.left_out_calibration and cal.calibration_index is None
    torch.testing.assert_close(cal.held_out_s_ctx, cal(extra).s_ctx)
    assert torch.equal(cal.calibration_images, extra)
    again = FewShotCalibrator(PixelFeatures()).load_support_state(cal.support_state())
    assert again.calibration_index is None and torch.equal(again.held_out_s_ctx, cal.held_out_s_ctx)
    with pytest.raises(ValueError, match="not support images held out"):
        cal.scores_with(extra)
    loo = FewShotCalibrator(PixelFeatures()).fit(support)
    assert loo.left_out_calibration and loo.calibration_index.tolist() == [0, 1, 2]
    restored = FewShotCalibrator(PixelFeatures()).load_support_state(loo.support_state())
    assert torch.equal(restored.calibration_index, loo.calibration_index)
    torch.testing.assert_close(restored.scores_with(extra), loo.scores_with(extra))
