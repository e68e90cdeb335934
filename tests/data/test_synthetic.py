"""Synthetic generator: layout, determinism, masks matching defects, descriptions matching masks."""
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samllava.data import (
    SYNTHETIC_CATEGORIES, TADD_STANDIN_SUBSETS, generate_synthetic, load_folder, load_mvtec, position_on_grid,
)
from samllava.data.drawing import DEFECT_SIZE_CLASSES, DEFECT_TYPES, render
from samllava.data.instructions import size_label
from samllava.data.writer import GENERATOR_FILE


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(synthetic_root: Path):
    data = load_mvtec(synthetic_root)
    assert sorted(data) == sorted(SYNTHETIC_CATEGORIES)
    kinds = {c.kind for c in SYNTHETIC_CATEGORIES.values()}
    assert kinds == {"texture", "object"}
    for cat in data.values():
        assert len(cat.train) == 4 and len(cat.test) == 12
        assert sum(s.label for s in cat.test) == 6  # half of the test set defective
        assert {s.defect_type for s in cat.test} - {"good"} <= set(DEFECT_TYPES)
        assert all(len(s.image_path.stem) == 3 for s in cat.train + cat.test)
        assert all(s.mask_path.name == f"{s.image_path.stem}_mask.png" for s in cat.test if s.label)
        assert all(s.description for s in cat.test)  # descriptions.jsonl attached by the loader


def test_descriptions_file_records(synthetic_root: Path):
    recs = [json.loads(line) for line in (synthetic_root / "fabric" / "descriptions.jsonl").read_text().splitlines()]
    assert len(recs) == 12
    for r in recs:
        assert set(r) == {"image", "label", "defect_type", "position", "size", "shape", "colour", "description"}
        assert (synthetic_root / "fabric" / r["image"]).is_file()
        if r["label"] == 0:
            assert r["defect_type"] == "good" and "no defect" in r["description"]
        else:
            assert r["image"].startswith(f"test/{r['defect_type']}/")
            for key in ("defect_type", "position", "size", "colour"):
                assert r[key] in r["description"], (key, r)
            assert "woven grey fabric" in r["description"]


def test_masks_nonempty_iff_defective_and_position_agrees(synthetic_root: Path):
    for cat in load_folder(synthetic_root).values():
        masks = cat.load_masks(cat.test, 96)  # native size: no resampling
        for s, m in zip(cat.test, masks):
            assert bool(m.any()) == (s.label == 1), s.image_path
            expected = position_on_grid(m[0].numpy()) if s.label else "none"
            assert s.meta["position"] == expected, s.image_path
            if s.label:
                assert s.meta["size"] == size_label(m[0].numpy() > 0)


def test_mask_is_exactly_the_changed_pixels():
    rng_args = [7, 11]
    for cat in SYNTHETIC_CATEGORIES.values():
        for defect in cat.defects:
            for size_class in DEFECT_SIZE_CLASSES[defect]:
                clean = render(cat, np.random.default_rng(rng_args), (64, 64))
                out = render(cat, np.random.default_rng(rng_args), (64, 64), defect, size_class)
                changed = np.abs(out.image - clean.image).max(-1) > 0
                assert out.mask.any()
                assert not (changed & ~out.mask).any(), (cat.name, defect)  # nothing painted outside the mask
                assert changed[out.mask].mean() > 0.9, (cat.name, defect)  # the mask is painted


def test_defects_are_visibly_different_from_the_surface():
    """Mean colour change inside the mask (not tuned on detection results)."""
    for cat in SYNTHETIC_CATEGORIES.values():
        for defect in cat.defects:
            clean = render(cat, np.random.default_rng(3), (128, 128))
            out = render(cat, np.random.default_rng(3), (128, 128), defect, DEFECT_SIZE_CLASSES[defect][-1])
            diff = np.linalg.norm(out.image - clean.image, axis=-1)[out.mask].mean()
            assert diff > 0.25, (cat.name, defect, diff)


def test_micro_scratches_are_a_few_pixels_wide():
    cat = SYNTHETIC_CATEGORIES["metal_plate"]
    out = render(cat, np.random.default_rng(0), (256, 256), "scratch", "micro")
    assert out.attrs["size"] == "tiny"
    assert 0 < out.mask.sum() < 60
    rows, cols = np.nonzero(out.mask)
    assert max(np.ptp(rows), np.ptp(cols)) >= 8  # a line, not a dot
    large = render(SYNTHETIC_CATEGORIES["concrete"], np.random.default_rng(0), (256, 256), "stain", "large")
    assert large.attrs["size"] == "large"


def test_deterministic_bytes_and_seed_dependence(tmp_path: Path):
    kwargs = dict(categories=["fabric", "bottle_cap"], n_train=2, n_test=4, size=48)
    a = _digest(generate_synthetic(tmp_path / "a", seed=3, **kwargs))
    b = _digest(generate_synthetic(tmp_path / "b", seed=3, **kwargs))
    c = _digest(generate_synthetic(tmp_path / "c", seed=4, **kwargs))
    assert a == b
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith(".png")]
    assert all(a[k] != c[k] for k in images if "/train/" in f"/{k}")


def test_reuse_overwrite_and_foreign_folders(tmp_path: Path):
    root = generate_synthetic(tmp_path / "s", categories=["concrete"], n_train=1, n_test=2, size=32)
    marker = root / "concrete" / GENERATOR_FILE
    before = marker.stat().st_mtime_ns
    generate_synthetic(root, categories=["concrete"], n_train=1, n_test=2, size=32)  # same arguments: reused
    assert marker.stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="other arguments"):
        generate_synthetic(root, categories=["concrete"], n_train=2, n_test=2, size=32)
    generate_synthetic(root, categories=["concrete"], n_train=2, n_test=2, size=32, overwrite=True)
    assert len(list((root / "concrete" / "train" / "good").iterdir())) == 2
    (root / "fabric").mkdir()
    (root / "fabric" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate_synthetic(root, categories=["fabric"], n_train=1, n_test=2, size=32, overwrite=True)
    assert (root / "fabric" / "mine.txt").is_file()
    assert not list(tmp_path.glob("s/.*.tmp"))


def test_argument_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown synthetic category 'plastic'"):
        generate_synthetic(tmp_path, categories=["plastic"])
    with pytest.raises(ValueError, match="n_test must be at least 2"):
        generate_synthetic(tmp_path, n_test=1)
    with pytest.raises(ValueError, match="n_train"):
        generate_synthetic(tmp_path, n_train=0)


def test_tadd_standins_are_labelled(tmp_path: Path):
    assert len(TADD_STANDIN_SUBSETS) >= 5
    for subset, cat in TADD_STANDIN_SUBSETS.items():
        assert cat.stands_in_for == subset and "standin" in cat.name
        assert set(cat.defects) <= set(DEFECT_TYPES)
    root = generate_synthetic(tmp_path / "tadd", categories=["CFD", "Aitex"], n_train=1, n_test=4, size=48)
    data = load_folder(root)
    assert sorted(data) == ["tadd_aitex_standin", "tadd_cfd_standin"]
    assert {s.defect_type for s in data["tadd_cfd_standin"].test} == {"good", "crack"}


def test_generation_speed_is_reported(tmp_path: Path, record_property):
    """Timing sanity, recorded and not asserted (the machine is shared)."""
    start = time.perf_counter()
    generate_synthetic(tmp_path / "t", categories=list(SYNTHETIC_CATEGORIES), n_train=2, n_test=6, size=128)
    seconds = time.perf_counter() - start
    n_images = len(list((tmp_path / "t").rglob("*/t*/*/*.png")))
    assert n_images == 6 * 8
    record_property("synthetic_images_per_second", n_images / seconds)
    print(f"synthetic: {n_images} images of 128 px in {seconds:.2f} s")


def test_loaded_tensors_are_consistent(synthetic_root: Path):
    cat = load_folder(synthetic_root, category="pill_tablet")["pill_tablet"]
    x = cat.load_images(cat.test, 64)
    assert x.shape == (12, 3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1
    direct = torch.from_numpy(np.asarray(Image.open(cat.test[0].image_path), np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(cat.load_images(cat.test[:1], 96)[0], direct)
