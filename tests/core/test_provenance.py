"""Provenance: what every table, figure and JSON report records, and the table body that stays byte-identical."""
import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from samllava.core import provenance as prov
from samllava.core import results
from samllava.core.config import load_profile
from samllava.data import generate_synthetic, load_dataset

FIELDS = ("date", "git", "profile", "weights", "data", "seeds", "device", "versions")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "syn"
    generate_synthetic(root, categories=["fabric"], n_train=2, n_test=4, size=32, seed=0)
    return load_dataset(root)


def test_record_has_every_field(dataset):
    run = prov.provenance(profile=load_profile("offline"), data={"synthetic": dataset}, seeds=[0, 1], device="cpu")
    assert set(FIELDS) <= set(run)
    assert run["profile"] == "offline" and "llava vision tower: stand-in" in run["weights"]
    assert run["seeds"] == {"support": [0, 1], "training": 0, "random init": prov.INIT_SEED}
    d = run["data"]["synthetic"]
    assert d["folder"] == "syn" and d["files"] > 6 and len(d["sha256"]) == 16
    assert "threads" in run["device"]
    assert {"torch", "transformers", "open_clip", "segment-anything"} <= set(run["versions"])
    json.dumps(run)  # JSON-ready


def test_data_digest_follows_content_not_place(dataset, tmp_path):
    import shutil

    (cat,) = dataset.values()
    copy = tmp_path / "elsewhere" / "syn"
    shutil.copytree(cat.root.parent, copy)
    assert prov.data_digest(load_dataset(copy))["sha256"] == prov.data_digest(dataset)["sha256"]
    victim = next(p for p in (copy / "fabric").rglob("*.png"))
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert prov.data_digest(load_dataset(copy))["sha256"] != prov.data_digest(dataset)["sha256"]


def test_git_state_outside_a_checkout_is_unknown(tmp_path):
    assert prov.git_state(tmp_path) == {"commit": "unknown", "dirty": "unknown"}


def test_git_state_ignores_generated_artefacts(tmp_path):
    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.md").write_text("old\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    prov.git_state.cache_clear()
    assert prov.git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "t.md").write_text("new numbers\n")  # a run rewrote a table: still clean
    prov.git_state.cache_clear()
    assert prov.git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    prov.git_state.cache_clear()
    state = prov.git_state(tmp_path)
    prov.git_state.cache_clear()
    assert state["dirty"] is True and len(state["commit"]) == 40


def test_every_artefact_type_carries_the_record(dataset, tmp_path):
    run = prov.provenance(profile="tiny", data={"synthetic": dataset}, seeds=[3])
    df = pd.DataFrame({"method": ["ours (this run)"], "auroc": [91.25]})
    paths = results.write_table(df, "t", run=run, dataset="synthetic stand-in", directory=tmp_path)
    for path in paths.values():
        head = results.read_header(path)
        assert {"date", "commit", "profile", "weights", "dataset", "data", "seeds", "device", "versions"} <= set(head)
        assert "support [3]" in head["seeds"] and head["data"].startswith("synthetic (syn,")
    assert list(results.read_table(paths["csv"]).columns) == ["method", "auroc"]
    report = json.loads(results.write_json(tmp_path / "r.json", {"x": 1}, run=run).read_text())
    assert report["provenance"]["data"] == run["data"] and report["x"] == 1
    bare = json.loads(results.write_json(tmp_path / "b.json", {"x": 1}).read_text())  # no run: the machine and code
    assert {"date", "git", "device", "versions"} <= set(bare["provenance"])


def test_figure_gets_a_caption_line(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1])
    run = prov.provenance(profile="tiny", data="none")
    plain = tmp_path / "plain.png"
    fig.savefig(plain, dpi=120, bbox_inches="tight")
    path = results.save_figure(fig, "f", run=run, note="not comparable with the paper", directory=tmp_path)
    from PIL import Image

    assert Image.open(path).height > Image.open(plain).height  # the caption is drawn under the plot
    assert len(fig.texts) == 0  # and removed from the caller's figure afterwards
    text = prov.caption(run, "not comparable with the paper")
    assert text.startswith("not comparable with the paper") and "profile tiny" in text and "commit" in text


def test_same_numbers_same_body_whatever_the_date(tmp_path):
    df = pd.DataFrame({"method": ["a", "b (paper)"], "x": [1.0 / 3, np.nan], "x (paper)": [np.nan, 95.6]})
    first = prov.provenance(profile="tiny")
    second = {**first, "date": "2099-01-01T00:00:00Z", "git": {"commit": "f" * 40, "dirty": True}}
    a = results.write_table(df, "a", run=first, directory=tmp_path)
    b = results.write_table(df, "b", run=second, directory=tmp_path)
    for kind in ("md", "csv"):
        assert a[kind].read_bytes() != b[kind].read_bytes()
        assert results.table_body(a[kind]) == results.table_body(b[kind])
    md = results.table_body(a["md"]).decode()
    assert "| a | 0.3 |  |" in md and "| b (paper) | n/a | 95.6 |" in md  # an empty paper cell, not "n/a"
