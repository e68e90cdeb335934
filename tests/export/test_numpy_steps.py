"""Each numpy step of the runner against the torch or scipy function it stands in for."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from samllava.coarse.stage import CoarseOutput
from samllava.coarse.verdict import Verdict, verdict_masks
from samllava.data import load_image
from samllava.data.instructions import position_on_grid as position_torch_side
from samllava.export import numpy_steps as ns
from samllava.model.sam_llava import gate_fine_mask


@pytest.mark.parametrize("n_in, n_out", [(256, 224), (64, 224), (300, 64), (77, 256), (64, 64), (33, 7)])
def test_resize_matrix_is_torchs_antialiased_bilinear(n_in, n_out):
    x = torch.rand(1, 1, n_in, 5)
    want = F.interpolate(x, size=(n_out, 5), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    got = ns.resize_matrix(n_in, n_out) @ x[0, 0].numpy()
    np.testing.assert_allclose(got, want.numpy(), atol=2e-6)


def _save(tmp_path, name, array, mode=None):
    path = tmp_path / name
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba", "palette", "sixteen", "grey_alpha"])
def test_read_image_is_load_image(tmp_path, kind):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)  # non-square: resized both ways
    if kind == "rgb":
        path = _save(tmp_path, "a.png", rgb)
    elif kind == "grey":
        path = _save(tmp_path, "a.png", rgb[..., 0])
    elif kind == "rgba":
        path = _save(tmp_path, "a.png", np.dstack([rgb, rgb[..., :1]]))
    elif kind == "grey_alpha":
        path = tmp_path / "a.png"
        Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]])).convert("LA").save(path)
    elif kind == "palette":
        path = tmp_path / "a.png"
        Image.fromarray(rgb).convert("P").save(path)
    else:
        path = tmp_path / "a.png"
        Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(path)
    for size in (64, 32, 100):
        got, own = ns.read_image(path, size)
        np.testing.assert_allclose(got, load_image(path, size).numpy(), atol=2e-6)
        assert own == (70, 45) and got.dtype == np.float32


def test_read_image_names_a_bad_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        ns.read_image(tmp_path / "bad.png", 64)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        ns.read_image(tmp_path / "nope.png", 64)


def test_components_partition_like_scipy_label():
    rng = np.random.default_rng(1)
    for density in (0.3, 0.5, 0.6, 0.9):
        mask = rng.random((40, 57)) < density
        ours = ns.components(mask)
        theirs, _ = ndimage.label(mask)  # 4-connected
        assert ((ours >= 0) == mask).all()
        pairs = set(zip(ours[mask].tolist(), theirs[mask].tolist()))
        assert len(pairs) == len(set(ours[mask].tolist())) == len(set(theirs[mask].tolist()))  # a bijection


def test_components_of_a_spiral():  # one long path: many label passes in a naive propagation
    mask = np.zeros((31, 31), bool)
    top, left, bottom, right = 0, 0, 30, 30
    while top <= bottom and left <= right:
        mask[top, left:right + 1] = mask[top:bottom + 1, right] = True
        mask[bottom, left:right + 1] = True
        mask[top + 2:bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            mask[top, left - 1] = True
    assert len(np.unique(ns.components(mask)[mask])) == ndimage.label(mask)[1]


def test_hysteresis_is_skimages():
    rng = np.random.default_rng(2)
    for _ in range(20):
        image = ndimage.gaussian_filter(rng.random((48, 48)), 2).astype(np.float32)
        low, high = np.quantile(image, [0.6, 0.95])
        np.testing.assert_array_equal(ns.hysteresis(image, float(low), float(high)),
                                      apply_hysteresis_threshold(image, float(low), float(high)))
    np.testing.assert_array_equal(ns.hysteresis(image, 2.0, 1.0), apply_hysteresis_threshold(image, 2.0, 1.0))


def _verdicts():
    held = (0.5, 1.0, 1.5, 2.0, 2.0)
    return [Verdict(image=2.0, pixel=1.2, rule="calibration set", n_normals=5, target_fpr=0.2, held_out=held),
            Verdict(image=1.7, pixel=1.1, rule="gumbel", n_normals=2, target_fpr=0.2, held_out=held[:2]),
            Verdict(image=2.0, pixel=1.2, rule="leave-one-out", n_normals=5, target_fpr=0.2, held_out=held)]


def _record(v: Verdict) -> dict:
    return {**v.to_dict(), "held_out": list(v.held_out)}


@pytest.mark.parametrize("verdict", _verdicts(), ids=lambda v: v.rule)
def test_judge_and_coarse_masks_are_the_verdicts(verdict):
    rng = np.random.default_rng(3)
    maps = np.stack([ndimage.gaussian_filter(rng.random((32, 32)), 2) for _ in range(12)]).astype(np.float32)
    peaks = np.linspace(0.5, 3.0, 12, dtype=np.float32)
    peaks[0] = 2.0  # a score equal to a calibration score and to the threshold
    maps = maps / maps.reshape(12, -1).max(1)[:, None, None] * peaks[:, None, None]  # scores around the thresholds
    calibration = None
    if verdict.rule == "leave-one-out":
        calibration = torch.from_numpy(rng.random((5, 12)).astype(np.float32) * 3)
    want_def, want_masks = verdict_masks(torch.from_numpy(maps), verdict, calibration)
    scores = maps.reshape(12, -1).max(1)
    defective = ns.judge(scores, _record(verdict), None if calibration is None else calibration.numpy())
    np.testing.assert_array_equal(defective, want_def.numpy())
    np.testing.assert_array_equal(ns.coarse_masks(maps, defective, _record(verdict)), want_masks.numpy())
    assert 0 < defective.sum() < 12


def test_gate_is_gate_fine_mask():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(4, 16, 16)).astype(np.float32)
    logits[1] = -1  # SAM returns nothing on a flagged image: M'_coarse
    coarse = rng.random((4, 16, 16)) > 0.7
    defective = np.array([True, True, False, True])
    out = CoarseOutput(heatmap=None, lam=None, calibrated=torch.zeros(4, 16, 16), mask=torch.from_numpy(coarse),
                       log_map=torch.zeros(4, 16, 16), score=torch.zeros(4), defective=torch.from_numpy(defective),
                       terms={})
    want = gate_fine_mask(torch.from_numpy(logits) > 0, out)
    np.testing.assert_array_equal(ns.gate(logits, coarse, defective), want.numpy())


def test_position_on_grid_is_the_datas():
    rng = np.random.default_rng(5)
    for _ in range(50):
        mask = np.zeros((30, 45), bool)
        y, x = rng.integers(0, 30), rng.integers(0, 45)
        mask[y:y + rng.integers(1, 12), x:x + rng.integers(1, 12)] = True
        assert ns.position_on_grid(mask) == position_torch_side(mask)
    assert ns.position_on_grid(np.zeros((8, 8), bool)) == position_torch_side(np.zeros((8, 8), bool)) == "none"
