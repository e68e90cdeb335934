"""`samllava diagnose` and `samllava train`: many images, the default trained model, outputs at the images' own
size, errors a person can read."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from samllava.assets import weights
from samllava.cli import main
from samllava.core.config import load_profile
from samllava.data import generate_synthetic
from samllava.data.instructions import NO_POSITION, POSITIONS
from samllava.train.default_model import DONE, MissingModelError, default_checkpoint, default_model_dir
from tests.user_folder import SIZE, write_user_folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Weights cache and data folder of this module: the tiny default model is trained once, here."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(weights.CACHE_ENV, str(root / "weights"))
        mp.setenv("SAMLLAVA_DATA_DIR", str(root / "data"))
        yield root


@pytest.fixture(scope="module")
def fabric(cache):
    return generate_synthetic(cache / "syn", categories=["fabric"], n_train=3, n_test=4, size=64, seed=0) / "fabric"


def test_train_builds_the_default_model_once(cache, capsys):
    profile = load_profile("tiny")
    with pytest.raises(MissingModelError, match="samllava train --profile tiny"):
        default_checkpoint(profile, train_if_missing=False)
    assert main(["train", "--profile", "tiny", "--no-progress"]) == 0
    out = default_model_dir(profile)
    assert str(out) in capsys.readouterr().out and (out / DONE).is_file()
    assert out.parent.parent == weights.cache_dir()  # in the weights cache, keyed by profile and code
    assert default_checkpoint(profile, train_if_missing=False) == out / "last.pt"


def test_diagnose_images_and_folders(fabric, cache, capsys):
    one = sorted((fabric / "test" / "good").glob("*.png"))[0]
    out = cache / "out"
    assert main(["diagnose", str(one), str(fabric / "test"), "--profile", "tiny", "--support",
                 str(fabric / "train" / "good"), "--out", str(out), "--no-progress", "--max-new-tokens", "4"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4  # the file given twice (alone and inside its folder) is diagnosed once
    assert list(summary.columns)[:6] == ["image", "score", "verdict", "answer", "position", "fine_mask_pixels"]
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(folders) == 4
    for folder in folders:
        report = json.loads((folder / "report.json").read_text())
        row = summary[summary["image"] == report["image"]].iloc[0]
        assert row["verdict"] == report["verdict"] and row["fine_mask_pixels"] == report["fine_mask_pixels"]
        assert report["verdict"] in ("normal", "defective") and report["thresholds"]["normals"] == 3
        assert report["support"] == {"folder": str(fabric / "train" / "good"), "images": 3, "calibration": None}
        assert report["checkpoint"].endswith("last.pt") and report["profile"] == "tiny"
        run = report["provenance"]  # what it used, by content
        assert run["profile"] == "tiny" and "random" in run["weights"] and "support" in run["data"]
        assert run["data"]["support"]["files"] == 3 and run["data"]["images"].startswith("4 image file(s) under")
        assert report["facts"]["subject"] == "the part" and report["words_from"]
        # the verdict, the masks and the position agree
        empty = report["fine_mask_pixels"] == 0
        assert empty == (report["verdict"] == "normal") == (report["coarse_mask_pixels"] == 0)
        assert report["fine_mask_position"] in (*POSITIONS, NO_POSITION)
        assert (report["fine_mask_position"] == NO_POSITION) == empty
        mask = np.asarray(Image.open(folder / "mask.png"))
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    assert "summary.csv" in capsys.readouterr().out


def test_support_memory_is_cached_by_content(fabric, cache):
    support = str(fabric / "train" / "good")
    image = str(sorted((fabric / "test" / "good").glob("*.png"))[0])
    args = ["diagnose", image, "--profile", "tiny", "--support", support, "--no-progress", "--max-new-tokens", "2"]
    assert main([*args, "--out", str(cache / "a")]) == 0
    cached = list((weights.cache_dir() / "support").glob("*.pt"))
    assert len(cached) == 1
    assert main([*args, "--out", str(cache / "b")]) == 0
    assert list((weights.cache_dir() / "support").glob("*.pt")) == cached
    a = pd.read_csv(cache / "a" / "summary.csv")
    b = pd.read_csv(cache / "b" / "summary.csv")
    assert a["score"].tolist() == b["score"].tolist()  # the cached memory scores exactly as the fitted one


def test_errors_are_one_line(fabric, cache, tmp_path, capsys):
    image = str(sorted((fabric / "test" / "good").glob("*.png"))[0])
    base = ["diagnose", "--profile", "tiny", "--out", str(tmp_path / "o"), "--no-progress"]

    def fails(args, message):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("samllava diagnose: ") and message in err and "Traceback" not in err

    fails([*base, image], "no zero-shot signal")  # the tiny profile's CLIP is random: no support, no signal
    (tmp_path / "empty").mkdir()
    fails([*base, image, "--support", str(tmp_path / "empty")], "holds no images")
    fails([*base, str(tmp_path / "nope.png"), "--support", str(fabric / "train" / "good")], "no such file or folder")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    fails([*base, str(tmp_path / "bad.png"), "--support", str(fabric / "train" / "good")], "not a readable image")
    with pytest.raises(ValueError, match="no zero-shot signal"):
        main(["--debug", *base, image])


def test_outputs_at_the_images_own_size(fabric, cache, tmp_path, capsys):
    """A user's photographs (not square, not the model's side): mask.png and overlay.png come back at each
    image's width and height, the size difference from the support is warned about once (and in each
    report), and the files get the usual permissions."""
    own = write_user_folder(tmp_path / "own", categories=("widget",))
    images = sorted((own / "widget" / "test").rglob("*.*"))
    old = os.umask(0o022)
    try:
        assert main(["diagnose", *map(str, images), "--profile", "tiny", "--support", str(fabric / "train" / "good"),
                     "--out", str(tmp_path / "out"), "--no-progress", "--max-new-tokens", "2"]) == 0
    finally:
        os.umask(old)
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "warning:" in line]
    assert len(warned) == 1 and f"{len(images)} of {len(images)} image(s) differ" in warned[0], err
    assert "No pretrained weights" not in err and "FutureWarning" not in err and "Loading weights" not in err
    for folder in (p for p in (tmp_path / "out").iterdir() if p.is_dir()):
        mask, shown = Image.open(folder / "mask.png"), Image.open(folder / "overlay.png")
        assert mask.size == shown.size == SIZE and mask.mode == "L" and shown.mode == "RGB"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        report = json.loads((folder / "report.json").read_text())
        assert report["image_size"] == list(SIZE) and report["model_image_size"] == 64
        assert len(report["warnings"]) == 1 and "64x64" in report["warnings"][0]
        for name in ("mask.png", "overlay.png", "report.json"):
            assert (folder / name).stat().st_mode & 0o777 == 0o644, name
    assert (tmp_path / "out" / "summary.csv").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_a_new_process_prints_no_library_chatter(fabric, cache, tmp_path):
    """Images of the support's size: no warning; and none of the libraries' own lines (open_clip's "No pretrained
    weights loaded", transformers' FutureWarnings and "Loading weights" bars) without --debug."""
    default_checkpoint(load_profile("tiny"))  # trained here when this test runs alone (make test-slow): first-use
    # training prints its own lines, which are not library chatter
    one = sorted((fabric / "test" / "good").glob("*.png"))[0]
    run = subprocess.run([sys.executable, "-m", "samllava", "diagnose", str(one), "--profile", "tiny", "--support",
                          str(fabric / "train" / "good"), "--out", str(tmp_path / "o"), "--no-progress",
                          "--max-new-tokens", "2"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert json.loads((tmp_path / "o" / one.stem / "report.json").read_text())["warnings"] == []
