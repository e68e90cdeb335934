"""The prepared GPU scripts run on the CPU in their smallest modes, so the next GPU run starts from code that ran:
``gpu_bench.py`` its CPU check (the tiny profile through the same bench options, the eager decode step), and
``gpu_device_check.py --device cpu --paper-profile tiny`` both of its single-device parts."""
import json

import gpu_bench  # benchmarks/gpu_bench.py
import gpu_device_check  # benchmarks/gpu_device_check.py
import pytest
import torch

from samllava.assets import weights

pytestmark = pytest.mark.slow  # make test-slow (docs/benchmarks.md: the two tiers)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script goes on to the paper-size run")
def test_gpu_bench_cpu_check(tmp_path, capsys):
    gpu_bench.main(["--out", str(tmp_path), "--compile-mode", "none"])
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["cpu_check_s"] > 0 and "gpu" not in report
    assert "CPU check passed" in capsys.readouterr().out


def test_gpu_device_check_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "weights"))
    monkeypatch.setenv("SAMLLAVA_DATA_DIR", str(tmp_path / "data"))
    assert gpu_device_check.main(["--out", str(tmp_path), "--device", "cpu", "--paper-profile", "tiny"]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    for part in ("tiny", "paper_random_weights"):
        assert "error" not in report[part], report[part].get("error")
    assert report["tiny"]["checkpoint_round_trip_equal"]
    assert report["paper_random_weights"]["train_step"]["losses"]
