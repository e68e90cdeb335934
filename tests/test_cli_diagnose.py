"""`samllava diagnose` writes mask, overlay and a JSON report with answer and description."""
import json

import numpy as np
from PIL import Image

from samllava.cli import main
from samllava.data import generate_synthetic
from samllava.data.instructions import NO_POSITION, POSITIONS


def test_diagnose_cli(tmp_path):
    root = generate_synthetic(tmp_path / "syn", categories=["fabric"], n_train=2, n_test=2, size=64, seed=0)
    image = sorted((root / "fabric" / "test").rglob("*.png"))[0]
    out = tmp_path / "out"
    assert main(["diagnose", str(image), "--profile", "tiny", "--support", str(root / "fabric" / "train" / "good"),
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {"answer", "description", "score"} <= set(report) and report["category"] == "object"
    assert report["fine_mask_position"] in (*POSITIONS, NO_POSITION)
    assert (report["fine_mask_position"] == NO_POSITION) == (report["fine_mask_pixels"] == 0)
    assert report["coarse_terms"]["few_shot"].startswith("active")
    mask = np.asarray(Image.open(out / "mask.png"))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    assert Image.open(out / "overlay.png").size == (64, 64)


def test_diagnose_cli_zero_shot_and_bad_support(tmp_path):
    root = generate_synthetic(tmp_path / "syn", categories=["fabric"], n_train=2, n_test=2, size=64, seed=0)
    image = sorted((root / "fabric" / "test").rglob("*.png"))[0]
    assert (
        main(["diagnose", str(image), "--profile", "tiny", "--category", "fabric", "--out", str(tmp_path / "o")]) == 0
    )
    assert json.loads((tmp_path / "o" / "report.json").read_text())["coarse_terms"]["few_shot"].startswith("inactive")
    (tmp_path / "empty").mkdir()
    import pytest

    with pytest.raises(ValueError, match="holds no images"):
        main(
            [
                "diagnose",
                str(image),
                "--profile",
                "tiny",
                "--support",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "o2"),
            ]
        )
