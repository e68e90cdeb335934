"""Try your own image: the panel gives what `samllava diagnose` gives (same code path and default model),
from a path or an upload; its notebook is thin, in step with its source and runs headless under papermill."""

import datetime
import json
import re
import sys
from pathlib import Path

import pytest

from samllava.assets import weights
from samllava.cli import main
from samllava.data import generate_synthetic
from samllava.notebook.try_image import WAITING, diagnosis_lines, save_uploads, try_your_own_image

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "try_your_own_image.ipynb"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A weights cache of this module's own, where the tiny default model is trained once."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(weights.CACHE_ENV, str(root / "weights"))
        assert main(["train", "--profile", "tiny", "--no-progress"]) == 0
        yield root


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = generate_synthetic(
        tmp_path_factory.mktemp("syn"), categories=["fabric"], n_train=2, n_test=2, size=64, seed=0
    )
    image = next(p for p in sorted((root / "fabric" / "test").rglob("*.png")) if p.parent.name != "good")
    return image, root / "fabric" / "train" / "good"


def _upload(path: Path) -> dict:
    data = path.read_bytes()
    return {
        "name": path.name,
        "type": "image/png",
        "size": len(data),
        "content": memoryview(data),
        "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    }


def test_status_lines():
    report = {
        "category": "object",
        "score": -0.5,
        "verdict": "defective",
        "thresholds": {"image_threshold": -0.75},
        "answer": "yes",
        "fine_mask_pixels": 12,
        "fine_mask_position": "top left",
        "description": " A scratch. ",
    }
    lines = diagnosis_lines(report, "cap.png", shots=2)
    assert lines == [
        "image: cap.png; category: object; few-shot, K = 2 normal images",
        "score -0.5; verdict: defective (image threshold -0.75)",
        "the model's answer (is there a defect?): yes; fine mask: 12 px, at the top left",
        "description: A scratch.",
    ]
    zero = diagnosis_lines({**report, "verdict": None, "thresholds": None}, "cap.png", shots=0)
    assert "zero-shot (no normal images)" in zero[0] and "no calibrated threshold" in zero[1]


def test_save_uploads_strips_folders(tmp_path, files):
    image, _ = files
    up = _upload(image)
    up["name"] = "../../evil/" + image.name
    (saved,) = save_uploads([up], tmp_path / "in")
    assert saved == tmp_path / "in" / image.name and saved.read_bytes() == image.read_bytes()


def test_panel_matches_the_command_line(tmp_path, files, cache):
    image, support = files
    panel = try_your_own_image("tiny", image_path=str(image), support_dir=str(support), out_dir=str(tmp_path / "panel"))
    assert panel.diagnoser.checkpoint.endswith("last.pt")  # the default trained model, as diagnose without --checkpoint
    assert (
        main(
            [
                "diagnose",
                str(image),
                "--profile",
                "tiny",
                "--support",
                str(support),
                "--out",
                str(tmp_path / "cli"),
                "--no-progress",
            ]
        )
        == 0
    )
    cli = json.loads((tmp_path / "cli" / image.stem / "report.json").read_text())
    saved = json.loads((tmp_path / "panel" / "report.json").read_text())
    assert saved.pop("provenance")["git"] and panel.report == saved  # report.json carries the run's provenance
    same = [k for k in cli if k not in ("score", "provenance")]  # the same model, support, verdict, masks, words
    assert {k: panel.report[k] for k in same} == {k: cli[k] for k in same}
    assert panel.report["score"] == pytest.approx(cli["score"], abs=1e-6)
    for name in ("mask.png", "overlay.png"):
        assert (tmp_path / "panel" / name).read_bytes() == (tmp_path / "cli" / image.stem / name).read_bytes()
    status = panel.status.value
    assert "few-shot, K = 2" in status and "verdict: " + cli["verdict"] in status and "description:" in status


def test_uploads_drive_the_panel(files, cache):
    image, support = files
    panel = try_your_own_image("tiny")
    assert panel.report is None and WAITING in panel.status.value and not panel.image.value
    panel.upload_image.value = (_upload(image),)
    # the tiny profile's CLIP is random: without normal images the panel refuses, as the command does
    assert panel.report is None and "no zero-shot signal" in panel.status.value
    panel.upload_support.value = tuple(_upload(p) for p in sorted(support.glob("*.png")))
    assert panel.report is not None and "few-shot, K = 2" in panel.status.value and panel.image.value
    panel.zero_shot.click()
    assert panel.report is None and "no zero-shot signal" in panel.status.value
    broken = {**_upload(image), "name": "broken.png", "content": memoryview(b"not an image")}
    panel.upload_image.value = (broken,)
    assert panel.report is None and "cannot decode image" in panel.status.value


def test_notebook_is_thin_and_matches_source():
    sys.path.insert(0, str(ROOT / "tools"))
    from py2nb import convert

    nb = json.loads(NOTEBOOK.read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    params = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    assert any(line.startswith("device = None") for line in params["source"])  # like every other notebook
    assert not any(re.search(r"^\s*(def|class) ", c, re.M) for c in code)
    expected = [c.source for c in convert((ROOT / "notebooks" / "src" / "try_your_own_image.py").read_text()).cells]
    assert ["".join(c["source"]) for c in nb["cells"]] == expected, "run tools/py2nb.py"
    assert not re.match(r"^\d{2}_", NOTEBOOK.name)  # outside `samllava reproduce`'s numbered sequence


@pytest.mark.notebooks
@pytest.mark.slow
def test_notebook_runs_headless_with_a_path(tmp_path, files, cache):
    import papermill as pm

    image, support = files
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(out),
        parameters={
            "profile": "tiny",
            "image_path": str(image),
            "support_dir": str(support),
            "out_dir": str(tmp_path / "out"),
        },
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
        execution_timeout=600,
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["profile"] == "tiny" and report["checkpoint"].endswith("last.pt") and report["support"]["images"] == 2
    assert report["coarse_terms"]["few_shot"].startswith("active")
    shown = json.loads(out.read_text())["cells"][-1]["outputs"][0]["data"]["text/plain"]
    assert "'answer'" in "".join(shown)
