"""``samllava export``: its arguments (parsed without torch) and the command end to end on a checkpoint."""
import argparse
import json
import subprocess
import sys

import pytest
import torch

from samllava.core.config import load_profile
from samllava.export import runner
from samllava.export.command import export_cli
from samllava.export.parser import add_export_parser
from samllava.export.spec import MEMORY_CAP, model_files
from samllava.model.checkpoint import save_checkpoint
from samllava.model.sam_llava import build_model


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="samllava")
    add_export_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["export", *argv])


def test_the_arguments_and_their_defaults():
    args = _parse(["--support", "normals", "--out", "m.onnx"])
    assert (args.support, args.out, args.max_patches, args.calibration, args.checkpoint, args.profile) == \
        ("normals", "m.onnx", MEMORY_CAP, None, None, None)
    assert _parse(["--support", "n", "--out", "m.onnx", "--max-patches", "0"]).max_patches == 0
    with pytest.raises(SystemExit):
        _parse(["--support", "n", "--out", "m.onnx", "--max-patches", "-3"])
    with pytest.raises(SystemExit):
        _parse(["--out", "m.onnx"])  # --support is required


def test_the_parser_needs_no_torch():
    code = ("import sys; sys.modules['torch'] = None\nimport argparse\nfrom samllava.export.parser import "
            "add_export_parser\nadd_export_parser(argparse.ArgumentParser().add_subparsers())")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0


def test_export_cli_writes_the_three_files(held_out, support_cache, tmp_path, capsys):
    profile = load_profile("tiny")
    model = build_model(profile, device="cpu")
    checkpoint = save_checkpoint(model, torch.optim.Adam(model.trainable_parameters()), 0, [], tmp_path / "last.pt")
    support = held_out[2] / "train" / "good"
    args = _parse(["--profile", "tiny", "--support", str(support), "--checkpoint", str(checkpoint), "--out",
                   str(tmp_path / "x" / "model.onnx"), "--max-patches", "50", "--no-progress"])
    assert export_cli(args) == 0
    files = model_files(tmp_path / "x" / "model.onnx")
    assert all(f.is_file() for f in files.values())
    record = json.loads(files["json"].read_text())
    assert record["checkpoint"] == str(checkpoint) and record["support"]["folder"] == str(support)
    assert record["support"]["coreset"] and record["support"]["memory"] == [50, 50, 50]
    out = capsys.readouterr().out
    assert "python -m samllava.export.runner" in out and "(coreset)" in out
    rows = runner.run(runner.Detector(files["detect"]), runner.gather_images([held_out[2] / "test"]), tmp_path / "o")
    assert len(rows) == 8 and {r["verdict"] for r in rows} <= {"normal", "defective"}
    with pytest.raises(ValueError, match="ending in .onnx"):
        export_cli(_parse(["--support", str(support), "--out", str(tmp_path / "model")]))
