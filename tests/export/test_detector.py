"""Parity: an exported model, run by the torch-free runner, against ``samllava diagnose``'s road (Diagnoser.run)
on held-out synthetic images and real textures: scores within 1e-4 relative, the same verdicts, answers and
positions, masks with IoU >= 0.99. Each verdict rule; the tiny profile, and the offline one with its weights."""
import json
import shutil
from pathlib import Path

import onnx
import pytest
from PIL import Image

from samllava.core.config import load_profile
from samllava.data import generate_realtex, generate_synthetic
from samllava.export import runner
from samllava.export.detector import export_detector
from samllava.export.spec import model_files
from samllava.model.checkpoint import load_model
from tests.export.conftest import diagnoser_for, needs_offline_weights, parity, sam_trained


def test_tiny_parity_on_held_out_synthetic_and_real_textures(tiny, held_out, support_cache, tmp_path):
    seen = []
    for folder in held_out:
        diagnoser = diagnoser_for(tiny, folder / "train" / "good")
        record = export_detector(tiny, tmp_path / folder.name / "model.onnx")
        assert record["verdict"]["rule"] == "leave-one-out"
        files = runner.gather_images([folder / "test"])
        seen.append(parity(diagnoser, tmp_path / folder.name / "model.onnx", files, tmp_path / folder.name))
    assert sum(s["defective"] for s in seen) > 0 and sum(s["defective"] for s in seen) < sum(s["images"] for s in seen)


def _split(folder: Path, root: Path, shots: int, calibration: int) -> tuple[Path, Path | None]:
    """A support folder of the first ``shots`` normal images and a calibration folder of the next ones."""
    normals = sorted((folder / "train" / "good").glob("*.png"))
    parts = {"support": normals[:shots], "calibration": normals[shots:shots + calibration]}
    for name, files in parts.items():
        (root / name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / name / f.name)
    return root / "support", (root / "calibration") if calibration else None


@pytest.mark.parametrize("rule, shots, calibration", [("calibration set", 3, 5), ("gumbel", 1, 0)])
def test_tiny_parity_under_each_rule(tiny, held_out, support_cache, tmp_path, rule, shots, calibration):
    support, normals = _split(held_out[1], tmp_path, shots, calibration)
    diagnoser = diagnoser_for(tiny, support, normals)
    record = export_detector(tiny, tmp_path / "model.onnx")
    assert record["verdict"]["rule"] == rule and record["outputs"]["detect"] == ["decision", "score", "embedding"]
    parity(diagnoser, tmp_path / "model.onnx", runner.gather_images([held_out[1] / "test"]), tmp_path)


def test_tiny_parity_on_images_of_other_sizes_and_modes(tiny, tiny_export, held_out, tmp_path):
    model, record = tiny_export
    sources = sorted(f for f in (held_out[0] / "test").rglob("*.png") if f.parent.name != "good")
    sizes = [(72, 60), (64, 80), (100, 100), (50, 64)]
    (tmp_path / "odd").mkdir()
    for i, (f, size) in enumerate(zip(sources, sizes)):  # resized, grey, palette: squashed to S as diagnose does
        image = Image.open(f).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        (image.convert("L") if i == 1 else image.convert("P") if i == 2 else image).save(tmp_path / "odd" / f"{i}.png")
    files = runner.gather_images([tmp_path / "odd"])
    numbers = parity(diagnoser_for(tiny, Path(record["support"]["folder"])), model, files, tmp_path)
    assert numbers["defective"] > 0
    for i, size in enumerate(sizes):  # masks come back at the image's own size
        assert Image.open(tmp_path / "onnx" / str(i) / "mask.png").size == size


def test_the_json_records_what_the_runner_needs_and_where_it_came_from(tiny_export):
    out, record = tiny_export
    files = model_files(out)
    on_disk = json.loads(files["json"].read_text())
    assert {k: on_disk[k] for k in record} == json.loads(json.dumps(record))
    assert on_disk["profile"] == "tiny" and on_disk["input"]["side"] == 64
    assert set(on_disk["verdict"]) >= {"image_threshold", "pixel_threshold", "rule", "normals", "target_fpr"}
    assert on_disk["support"]["images"] == 8 and on_disk["support"]["coreset"] is False
    assert on_disk["input"]["normalisation inside the graph"]["clip"]["side"] == 64  # the tiny CLIP term is on
    assert "active" in on_disk["terms"]["zero_shot"] and "language model" in on_disk["not exported"]
    assert on_disk["provenance"]["git"]["commit"]
    for key in ("detect", "fine"):
        graph = onnx.load(str(files[key]))
        onnx.checker.check_model(graph)
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17


@pytest.mark.offline_weights
@needs_offline_weights
@pytest.mark.slow
def test_offline_parity_on_held_out_synthetic_and_real_textures(support_cache, tmp_path):
    profile = load_profile("offline")
    model = sam_trained(load_model(profile, None, device="cpu"), profile, tmp_path / "train", steps=20)
    side = profile.data.image_size
    folders = [generate_synthetic(tmp_path / "syn", categories=["fabric"], n_train=4, n_test=6, size=side) / "fabric",
               generate_realtex(tmp_path / "tex", categories=["brick"], n_train=4, n_test=6, size=side) / "brick"]
    for folder in folders:
        diagnoser = diagnoser_for(model, folder / "train" / "good")
        record = export_detector(model, tmp_path / folder.name / "model.onnx")
        assert "clip" not in record["input"]["normalisation inside the graph"]  # use_zero_shot is off
        parity(diagnoser, tmp_path / folder.name / "model.onnx", runner.gather_images([folder / "test"]),
               tmp_path / folder.name)
