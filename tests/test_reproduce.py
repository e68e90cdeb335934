"""The papermill runner: order, selection, and an error that names the notebook and the cell."""
import json

import nbformat
import pytest

from samllava.cli import main
from samllava.reproduce import ReproduceError, numbered_notebooks, reproduce


def _book(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell('profile = "offline"\ndata_roots = {}')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


def test_runs_in_order_and_names_failing_cell(tmp_path):
    d = tmp_path / "nb"
    d.mkdir()
    _book(d / "01_ok.ipynb", ["x = 1"])
    _book(d / "02_bad.ipynb", ["y = 2", "raise RuntimeError('boom')"])
    _book(d / "notes.ipynb", ["z = 3"])  # not numbered: not run
    assert [p.name for p in numbered_notebooks(d)] == ["01_ok.ipynb", "02_bad.ipynb"]
    runs = reproduce(profile="tiny", only=["01"], directory=d, output_dir=tmp_path / "out", log=lambda m: None)
    assert [r.notebook for r in runs] == ["01_ok.ipynb"]
    executed = json.loads((tmp_path / "out" / "01_ok.ipynb").read_text())
    assert any('profile = "tiny"' in "".join(c["source"]) for c in executed["cells"])  # parameters injected
    with pytest.raises(ReproduceError, match=r"02_bad.ipynb: cell \d+ failed: RuntimeError: boom"):
        reproduce(profile="tiny", directory=d, output_dir=tmp_path / "out", log=lambda m: None)
    with pytest.raises(ReproduceError, match="matches no notebook"):
        numbered_notebooks(d, ["07"])


def test_cli_exit_code_on_failure(tmp_path, monkeypatch, capsys):
    import samllava.reproduce as r

    d = tmp_path / "nb"
    d.mkdir()
    _book(d / "01_bad.ipynb", ["1/0"])
    monkeypatch.setattr(r, "NOTEBOOK_DIR", d)
    monkeypatch.setattr(r, "EXECUTED_DIR", tmp_path / "out")
    assert main(["reproduce", "--profile", "tiny"]) == 1
    assert "01_bad.ipynb" in capsys.readouterr().err
