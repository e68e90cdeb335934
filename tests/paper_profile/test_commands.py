"""``samllava train``, ``diagnose`` and ``evaluate`` with the paper profile on its reduced files (conftest.py):
weights fetched and resolved as downloaded ones, CPU, float32."""
import json

import pandas as pd
import pytest
import torch
from PIL import Image

from paper_files import PaperFiles  # benchmarks/paper_files.py
from samllava.cli import main
from samllava.model.checkpoint import CHECKPOINT, DESCRIBER, WRAPPED, load_model
from tests.paper_profile.conftest import sam_256

pytestmark = pytest.mark.slow  # make test-slow (docs/benchmarks.md: the two tiers)


def test_train_one_step_and_read_back(trained, paper_files):
    state = torch.load(trained / CHECKPOINT, map_location="cpu", weights_only=True)
    assert len(state["history"]) == 1  # two labelled images, batch 8: one step
    assert state["base"].startswith("llava_1_5_7b@")
    with sam_256(paper_files):
        model = load_model(PaperFiles.reduced(sam_image_size=256).profile(), trained, device="cpu")
    kept = {k.replace(WRAPPED, DESCRIBER, 1): v for k, v in state["model"].items()
            if "lora_" not in k}  # load_model folds LoRA into the weights
    loaded = model.trainable_state()
    assert kept and set(kept) <= set(loaded)
    assert all(torch.equal(loaded[k], v) for k, v in kept.items())
    assert model.describer.llava.config.text_config.hidden_size == 4096


def test_diagnose_at_1024_px_with_the_trained_checkpoint(trained, profiles, small_data, tmp_path, capsys):
    # the checkpoint holds the trained parts, which do not depend on SAM's input side: trained at 256 px, used at 1,024
    cat = small_data / "fabric"
    image = next(p for p in sorted((cat / "test").rglob("*.png")) if p.parent.name != "good")
    out = tmp_path / "out"
    assert main(["diagnose", str(image), "--support", str(cat / "train" / "good"), "--checkpoint", str(trained),
                 "--profile", str(profiles["1024"]), "--category", "fabric", "--out", str(out),
                 "--max-new-tokens", "8", "--no-progress", "--device", "cpu"]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    report = json.loads((folder / "report.json").read_text())
    text = json.dumps(report)
    assert "clip_vit_b16_laion400m" in text and "sam_vit_h" in text and "llava_1_5_7b" in text
    assert Image.open(folder / "mask.png").size == Image.open(image).size
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 1 and summary["verdict"].iloc[0] in ("defective", "normal")
    assert "written:" in capsys.readouterr().out


def test_evaluate_the_full_method(trained, profiles, small_data, paper_files, tmp_path):
    out = tmp_path / "full.json"
    with sam_256(paper_files):
        assert main(["evaluate", "--profile", str(profiles["256"]), "--data", str(small_data), "--stage", "full",
                     "--checkpoint", str(trained), "--shots", "1", "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert report["stage"] == "full" and report["profile"] == "paper"
    assert 0.0 <= report["mean"]["description_accuracy"] <= 1.0
    assert "image_auroc" in report["categories"]["fabric"]["summary"]
