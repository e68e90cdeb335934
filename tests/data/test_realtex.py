"""Real-texture development set: layout, determinism, subtle defects inside their masks, disjoint sources."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samllava.cli import main
from samllava.data import REALTEX_CATEGORIES, generate_realtex, load_dataset, position_on_grid
from samllava.data.realtex import _crop_surface, paint_subtle


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def realtex_root(tmp_path_factory) -> Path:
    return generate_realtex(tmp_path_factory.mktemp("rt") / "rt", n_train=3, n_test=10, size=64, seed=5)


def test_layout_loads_with_masks_and_descriptions(realtex_root):
    data = load_dataset(realtex_root)
    assert sorted(data) == sorted(REALTEX_CATEGORIES)
    for name, cat in data.items():
        assert len(cat.train) == 3 and len(cat.test) == 10 and sum(s.label for s in cat.test) == 5
        assert cat.has_masks
        masks = cat.load_masks(cat.test, 64)[:, 0].numpy() > 0.5
        for s, m in zip(cat.test, masks):
            assert m.any() == bool(s.label)
            if s.label:
                assert s.meta["position"] == position_on_grid(m)
                assert REALTEX_CATEGORIES[name] in s.description and s.meta["position"] in s.description


def test_deterministic_and_reused(realtex_root, tmp_path):
    again = generate_realtex(tmp_path / "rt", n_train=3, n_test=10, size=64, seed=5)
    assert _digest(again) == _digest(realtex_root)
    other = generate_realtex(tmp_path / "rt2", categories=["gravel"], n_train=3, n_test=10, size=64, seed=6)
    assert _digest(other / "gravel") != _digest(realtex_root / "gravel")
    with pytest.raises(FileExistsError, match="other arguments"):
        generate_realtex(tmp_path / "rt", categories=["brick"], n_train=3, n_test=12, size=64, seed=5)
    with pytest.raises(ValueError, match="unknown real-texture"):
        generate_realtex(tmp_path / "x", categories=["marble"])


def test_textile_train_and_test_draw_distinct_photographs(realtex_root):
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((realtex_root / "textile").rglob("*.png"))
               if "ground_truth" not in p.parts]
    assert len(set(digests)) == len(digests)


def test_crops_come_from_the_split_quadrants():
    photo = np.zeros((512, 512), np.float32)
    photo[:256, :256] = photo[256:, 256:] = 1.0  # train quadrants bright, test quadrants dark
    rng = np.random.default_rng(0)
    assert all(_crop_surface(photo, rng, 32, "train").min() > 0.9 for _ in range(20))
    assert all(_crop_surface(photo, rng, 32, "test").max() < 0.1 for _ in range(20))


@pytest.mark.parametrize("defect", ["crack", "hole", "scratch", "stain", "contamination"])
def test_paint_subtle_changes_only_near_the_mask_and_at_low_contrast(defect):
    rng = np.random.default_rng(1)
    surface = np.full((48, 48, 3), 0.5, np.float32)
    mask = np.zeros((48, 48), bool)
    mask[20:28, 20:28] = True
    out, colour = paint_subtle(rng, surface, mask, defect)
    change = np.abs(out - surface).max(-1)
    assert change[mask].min() > 0.05  # visible inside the shape
    assert change[mask].max() < 0.5  # but never a full-contrast paint
    far = np.ones_like(mask)
    far[12:36, 12:36] = False
    assert change[far].max() < 1e-3  # nothing changes away from the defect
    assert isinstance(colour, str) and colour


def test_make_data_cli_writes_realtex(tmp_path, capsys):
    assert main(["make-data", "--kind", "realtex", "--out", str(tmp_path / "d"), "--n-train", "2", "--n-test", "4",
                 "--size", "48"]) == 0
    assert (tmp_path / "d" / "brick" / "generator.json").is_file()
    assert json.loads((tmp_path / "d" / "brick" / "generator.json").read_text())["generator"] == "generate_realtex"
    assert Image.open(next((tmp_path / "d" / "grass" / "test").rglob("*.png"))).size == (48, 48)
