"""Evaluation harness and CLI on generated folders (tiny profile)."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from samllava.cli import main
from samllava.core.config import load_profile
from samllava.data import generate_synthetic, load_dataset
from samllava.evaluate.harness import CoarseMethod, KnnMethod, evaluate, results_json, results_table


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("syn"), categories=["fabric", "bottle_cap"], n_train=4, n_test=8,
                              size=64, seed=0)


@pytest.fixture(scope="module")
def coarse():
    return CoarseMethod(load_profile("tiny"))


def test_evaluate_seeds_and_table(root, coarse):
    data = load_dataset(root)
    res = evaluate(coarse, data, shots=2, seeds=(0, 1), image_size=64, progress=False)
    assert set(res) == {"fabric", "bottle_cap"} and len(res["fabric"].per_seed) == 2
    table = results_table(res)
    assert list(table["category"]) == ["bottle_cap", "fabric", "mean"] or list(table["category"])[-1] == "mean"
    js = results_json(res, profile="tiny")
    assert 0 <= js["mean"]["image_auroc"] <= 1


def test_knn_baseline_same_backbone(root, coarse):
    data = load_dataset(root)
    knn = KnnMethod(load_profile("tiny"), extractor=coarse.coarse.calibrator.extractor)
    res = evaluate(knn, data, shots=1, seeds=(0,), image_size=64, progress=False)
    assert all(0 <= r.summary()["image_auroc"] <= 1 for r in res.values())
    with pytest.raises(ValueError, match="support"):
        knn(torch.rand(1, 3, 64, 64), "fabric", None)


def test_evaluate_cli_writes_json(root, tmp_path):
    out = tmp_path / "r.json"
    assert main(["evaluate", "--profile", "tiny", "--data", str(root), "--shots", "1", "--seeds", "0,1",
                 "--stage", "coarse", "--out", str(out)]) == 0
    js = json.loads(out.read_text())
    assert js["shots"] == 1 and js["seeds"] == [0, 1] and js["profile"] == "tiny"
    assert {"image_auroc", "pixel_auroc", "aupro", "f1_max"} <= set(js["categories"]["fabric"]["summary"])
    assert "few_shot" in js["terms"]
    # the histogram metrics' stated error, per seed and at most over the run; and where the numbers came from
    assert 0 <= js["categories"]["fabric"]["per_seed"][0]["pixel_auroc_bound"] <= js["error_bounds"]["pixel_auroc"]
    assert js["error_bounds"]["pixel_auroc"] <= 1e-7 and js["error_bounds"]["aupro"] < 1e-3
    prov = js["provenance"]
    assert prov["profile"] == "tiny" and prov["seeds"]["support"] == [0, 1] and prov["data"]["data"]["sha256"]


def test_image_level_only_folder_reports_pixel_na(root, tmp_path):
    own = tmp_path / "own"
    shutil.copytree(root / "fabric", own / "fabric")
    shutil.rmtree(own / "fabric" / "ground_truth")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--profile", "tiny", "--data", str(own), "--shots", "1", "--out", str(out)]) == 0
    s = json.loads(out.read_text())["categories"]["fabric"]["summary"]
    assert not math.isnan(s["image_auroc"])
    assert s["pixel_auroc"] is None or math.isnan(s["pixel_auroc"])


def test_wrong_root_is_clear_error(tmp_path, capsys):
    args = ["evaluate", "--profile", "tiny", "--data", str(tmp_path / "nowhere"), "--shots", "1"]
    assert main([*args, "--out", str(tmp_path / "x.json")]) == 2
    assert "nowhere" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_evaluate_full_stage_adds_description_accuracy(root, tmp_path, capsys):
    out = tmp_path / "full.json"
    assert main(["evaluate", "--profile", "tiny", "--data", str(root), "--shots", "1", "--stage", "full",
                 "--categories", "fabric", "--out", str(out)]) == 0
    assert "describe" in capsys.readouterr().err  # the answers, most of the time, show a progress bar
    js = json.loads(out.read_text())
    acc = js["categories"]["fabric"]["summary"]["description_accuracy"]
    assert 0 <= acc <= 1 and js["mean"]["description_accuracy"] == acc
    assert {"image_auroc", "pixel_auroc"} <= set(js["categories"]["fabric"]["summary"])


def test_score_category_pixel_metrics_from_one_pass():
    # score_category bins the pixels once for both pixel metrics: the same values as the separate functions
    from samllava import metrics
    from samllava.evaluate.harness import score_category

    rng = np.random.default_rng(0)
    masks = np.zeros((3, 16, 16), dtype=np.uint8)
    masks[0, 2:6, 3:7] = 1
    masks[2, 10:12, 1:15] = 1
    maps = rng.random((3, 16, 16)).astype(np.float32) + masks
    out = score_category(maps, maps.reshape(3, -1).max(1), np.array([1, 0, 1]), masks, has_masks=True)
    assert out["pixel_auroc"] == metrics.pixel_auroc(maps, masks)
    assert out["aupro"] == metrics.aupro(maps, masks)


@pytest.mark.slow
def test_two_cpu_processes_evaluate_what_one_process_evaluates(root, tmp_path):
    """``torchrun --nproc_per_node 2 -m samllava evaluate``: each rank scores every other image (gloo), rank 0
    gathers the maps and scores and writes the report; its metrics are those of one process."""
    import os
    import subprocess
    import sys

    args = ["evaluate", "--profile", "tiny", "--data", str(root), "--shots", "1", "--seeds", "0,1", "--stage", "coarse",
            "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "one.json")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "samllava",
           *args, "--out", str(tmp_path / "two.json")]
    run = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["categories"] == one["categories"] and two["mean"] == one["mean"]


def test_sharding_covers_every_image_once_in_order():
    from samllava.core.distributed import shard, unshard

    parts = [shard(7, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]] and shard(1, 1, 2) == []
    assert unshard([[f"x{i}" for i in p] for p in parts], 7) == [f"x{i}" for i in range(7)]
    with pytest.raises(ValueError, match="rank 1 returned"):
        unshard([[0, 3, 6], [1], [2, 5]], 7)
