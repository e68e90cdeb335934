"""Every numbered notebook: thin (parameters cell, no definitions), in step with its source, and
executed headless by papermill in the tiny profile (small budgets), writing into a temporary folder."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from samllava.notebook.runner import NOTEBOOK_DIR, numbered_notebooks
from samllava.core.results import read_header

pytestmark = pytest.mark.slow  # make test-slow (docs/benchmarks.md: the two tiers)

ROOT = Path(__file__).resolve().parents[2]
BOOKS = numbered_notebooks()
PROVENANCE_LINES = ("date", "commit", "profile", "weights", "data", "seeds", "device", "versions")
sys.path.insert(0, str(ROOT / "tools"))


def test_there_are_notebooks():
    assert len(BOOKS) >= 3


@pytest.mark.parametrize("path", BOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_and_matches_source(path):
    from py2nb import convert

    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), "no cell tagged 'parameters'"
    for c in code:
        assert not re.search(r"^\s*(def|class) ", "".join(c["source"]), re.M), "logic belongs in samllava/"
    src = NOTEBOOK_DIR / "src" / f"{path.stem}.py"
    expected = [c.source for c in convert(src.read_text()).cells]
    assert ["".join(c["source"]) for c in nb["cells"]] == expected, (
        f"{path.name} differs from {src}: run tools/py2nb.py"
    )


@pytest.mark.notebooks
@pytest.mark.parametrize("path", BOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless_tiny(path, tmp_path):
    env = {
        **os.environ,
        "SAMLLAVA_RESULTS_DIR": str(tmp_path / "results"),
        "SAMLLAVA_FIGURES_DIR": str(tmp_path / "figures"),
        "SAMLLAVA_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
    code = ("from samllava.notebook.runner import reproduce; from pathlib import Path; "
            f"reproduce(profile='tiny', only=['{path.name[:2]}'], smoke=True, output_dir=Path(r'{tmp_path}'))")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    produced = list((tmp_path / "results").glob("*.md")) + list((tmp_path / "figures").glob("*.png"))
    assert produced, "the notebook wrote no table or figure"
    for table in (tmp_path / "results").glob("*_*.*"):  # every table names its commit, date, profile, data, seeds
        if table.suffix in (".md", ".csv"):
            assert set(PROVENANCE_LINES) <= set(read_header(table)), table.name

