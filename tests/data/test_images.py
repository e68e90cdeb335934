"""load_image / load_mask: documented conversions and clear errors for bad files (all written in tmp_path)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samllava.data import load_image, load_mask
from samllava.data.images import check_mask_matches, image_size

RGB = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [51, 102, 204]]], np.uint8)  # (2, 2, 3)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(path)
    return path


def test_rgb_png_exact_values(tmp_path):
    x = load_image(_save(tmp_path / "rgb.png", RGB), 2)
    assert x.shape == (3, 2, 2) and x.dtype == torch.float32
    assert torch.allclose(x, torch.from_numpy(RGB).permute(2, 0, 1).float() / 255)


def test_greyscale_becomes_three_equal_channels(tmp_path):
    grey = np.array([[0, 128], [200, 255]], np.uint8)
    x = load_image(_save(tmp_path / "grey.png", grey), 2)
    assert x.shape == (3, 2, 2)
    expected = torch.from_numpy(grey).float() / 255
    for c in range(3):
        assert torch.allclose(x[c], expected)


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.concatenate([RGB, np.array([[[0], [255]], [[10], [128]]], np.uint8)], axis=-1)
    x = load_image(_save(tmp_path / "rgba.png", rgba), 2)
    # A fully transparent red pixel stays red: alpha is dropped, not blended onto a background.
    assert torch.allclose(x, torch.from_numpy(RGB).permute(2, 0, 1).float() / 255)


def test_palette_image_resolves_colours(tmp_path):
    path = _save(tmp_path / "pal.png", RGB, None)
    Image.open(path).convert("P").save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    x = load_image(tmp_path / "p.png", 2)
    assert torch.allclose(x, torch.from_numpy(RGB).permute(2, 0, 1).float() / 255, atol=2 / 255)


def test_sixteen_bit_scaled_to_unit_range(tmp_path):
    values = np.array([[0, 65535], [32768, 1000]], np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # a real 16-bit PNG, not silently 8-bit
    x = load_image(path, 2)
    assert torch.allclose(x[0], torch.from_numpy(values.astype(np.float32) / 65535))
    assert torch.equal(x[0], x[2])


def test_32bit_integer_outside_16bit_range_is_rejected(tmp_path):
    path = tmp_path / "big.tif"
    Image.fromarray(np.array([[0, 70000], [5, 6]], np.int32)).save(path)
    with pytest.raises(ValueError, match="big.tif.*outside the 16-bit range"):
        load_image(path, 2)


def test_float_image_is_rejected_with_its_mode(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.ones((2, 2), np.float32)).save(path)
    with pytest.raises(ValueError, match="float.tif.*unsupported pixel format"):
        load_image(path, 2)


def test_truncated_png_names_the_file(tmp_path):
    path = _save(tmp_path / "whole.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cut = tmp_path / "truncated.png"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.png.*corrupt, truncated"):
        load_image(cut, 16)


def test_not_an_image_and_missing_file(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_text("this is not a png")
    with pytest.raises(ValueError, match="junk.png"):
        load_image(junk, 8)
    with pytest.raises(FileNotFoundError, match="absent.png"):
        load_image(tmp_path / "absent.png", 8)
    with pytest.raises(ValueError, match="junk.png"):
        image_size(junk)


def test_resize_to_square_stays_in_unit_range(tmp_path):
    rng = np.random.default_rng(1)
    path = _save(tmp_path / "wide.png", rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    for size in (7, 64):
        x = load_image(path, size)
        assert x.shape == (3, size, size)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(ValueError, match="size"):
        load_image(path, 0)


def test_mask_binarises_multi_ids_and_255(tmp_path):
    ids = np.array([[0, 1], [2, 7]], np.uint8)
    m = load_mask(_save(tmp_path / "ids.png", ids), 2)
    assert m.shape == (1, 2, 2) and m.dtype == torch.float32
    assert torch.equal(m[0], torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    m255 = load_mask(_save(tmp_path / "m255.png", ids * 0 + np.array([[0, 255], [0, 0]], np.uint8)), 2)
    assert torch.equal(m255[0], torch.tensor([[0.0, 1.0], [0.0, 0.0]]))


def test_mask_rgb_any_channel_and_nearest_resize_stays_binary(tmp_path):
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[2:6, 2:6, 1] = 9  # non-zero in the green channel only
    m = load_mask(_save(tmp_path / "rgb_mask.png", mask), 4)
    assert m.shape == (1, 4, 4)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(
        m[0], torch.tensor([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    )


def test_mask_size_mismatch_names_both_files(tmp_path):
    image = _save(tmp_path / "img.png", np.zeros((10, 12, 3), np.uint8))
    mask = _save(tmp_path / "img_mask.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"img_mask.png is 10x10.*img.png is 12x10"):
        load_mask(mask, 4, image_path=image)
    ok = _save(tmp_path / "ok_mask.png", np.zeros((10, 12), np.uint8))
    check_mask_matches(image, ok)  # same size: no error
