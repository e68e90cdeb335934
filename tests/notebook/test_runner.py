"""The papermill runner: order, selection, and an error that names the notebook and the cell."""
import json

import nbformat
import pytest

from samllava.cli import main
from samllava.notebook.runner import ReproduceError, numbered_notebooks, reproduce


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
    runs = reproduce(profile="tiny", only=["01"], directory=d, output_dir=tmp_path / "out", log=lambda m: None,
                     results_dir=tmp_path / "results")
    assert [r.notebook for r in runs] == ["01_ok.ipynb"]
    executed = json.loads((tmp_path / "out" / "01_ok.ipynb").read_text())
    assert any('profile = "tiny"' in "".join(c["source"]) for c in executed["cells"])  # parameters injected
    with pytest.raises(ReproduceError, match=r"02_bad.ipynb: cell \d+ failed: RuntimeError: boom"):
        reproduce(profile="tiny", directory=d, output_dir=tmp_path / "out", log=lambda m: None,
                  results_dir=tmp_path / "results")
    with pytest.raises(ReproduceError, match="matches no notebook"):
        numbered_notebooks(d, ["07"])


def test_cli_exit_code_on_failure(tmp_path, monkeypatch, capsys):
    import samllava.notebook.runner as r

    d = tmp_path / "nb"
    d.mkdir()
    _book(d / "01_bad.ipynb", ["1/0"])
    monkeypatch.setattr(r, "NOTEBOOK_DIR", d)
    monkeypatch.setattr(r, "EXECUTED_DIR", tmp_path / "out")
    assert main(["reproduce", "--profile", "tiny"]) == 2  # every command's failure: one line, exit 2
    assert "01_bad.ipynb" in capsys.readouterr().err


def test_executed_copies_record_time_and_shrink_images_and_the_run_writes_times_and_summary(tmp_path):
    import base64
    import io

    from PIL import Image

    d = tmp_path / "nb"
    d.mkdir()
    wide = ("from PIL import Image as I; import io; from IPython.display import Image, display\n"
            "b = io.BytesIO(); I.new('RGB', (2000, 300), (200, 30, 30)).save(b, format='PNG')\n"
            "display(Image(data=b.getvalue()))")
    work = ("import time\nfrom samllava.core.timing import phase\n"  # 0.3 s decoding, 0.2 s of it nested encoding
            "with phase('decoding'):\n    time.sleep(0.1)\n    with phase('encoding'):\n        time.sleep(0.2)\n"
            "    time.sleep(0.2)")
    _book(d / "01_fig.ipynb", [wide, work])
    res = tmp_path / "results"
    runs = reproduce(profile="tiny", directory=d, output_dir=tmp_path / "out", log=lambda m: None, threads=1,
                     results_dir=res)
    executed = json.loads((tmp_path / "out" / "01_fig.ipynb").read_text())
    meta = executed["metadata"]["samllava"]
    assert meta["seconds"] == round(runs[0].seconds, 1) and meta["threads"] == 1 and meta["cpu"]
    (png,) = [o["data"]["image/png"] for c in executed["cells"] for o in c.get("outputs", []) if "data" in o]
    assert Image.open(io.BytesIO(base64.b64decode(png))).width == 800  # MAX_IMAGE_WIDTH
    times = json.loads((res / "reproduce_times.json").read_text())
    assert times["seconds"] == {"01_fig.ipynb": meta["seconds"]} and times["threads"] == 1
    phases = times["phases"]["01_fig.ipynb"]  # the kernel's seconds per kind of work, written when it exits
    assert phases == meta["phases"] and 0.3 <= phases["decoding"] < 1.0 and 0.2 <= phases["encoding"] < 0.6
    assert abs(sum(phases.values()) - meta["seconds"]) <= 0.2
    assert times["phases_total_s"]["decoding"] == phases["decoding"]
    assert {"date", "git", "device", "versions"} <= set(times["provenance"])
    assert (res / "SUMMARY.md").read_text().count("not produced") >= 10  # no tables in this folder


def test_kernels_get_one_thread_count(monkeypatch):
    import os

    from samllava.notebook.runner import pinned_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SAMLLAVA_THREADS", "3")
    with pinned_threads() as n:
        assert n == 3 and os.environ["OMP_NUM_THREADS"] == "3" and os.environ["MKL_DYNAMIC"] == "FALSE"
    assert "OMP_NUM_THREADS" not in os.environ  # restored afterwards


def test_a_run_into_the_committed_results_refuses_a_dirty_tree(tmp_path, monkeypatch):
    import samllava.notebook.runner as r

    d = tmp_path / "nb"
    d.mkdir()
    _book(d / "01_ok.ipynb", ["x = 1"])
    monkeypatch.setattr(r, "tree_state", lambda: {"commit": "abc", "dirty": True})
    with pytest.raises(ReproduceError, match="uncommitted changes.*--allow-dirty"):
        reproduce(profile="tiny", directory=d, output_dir=tmp_path / "out", log=lambda m: None,
                  results_dir=r.REAL_RESULTS)
    assert not (tmp_path / "out" / "01_ok.ipynb").exists()  # refused before any notebook ran
    logged = []
    r.check_clean(r.REAL_RESULTS, allow_dirty=True, log=logged.append)  # told otherwise: runs, and says so
    assert "dirty tree" in logged[0]
    r.check_clean(tmp_path / "results", allow_dirty=False)  # another folder (CI, tests): not committed, not checked
    monkeypatch.setattr(r, "tree_state", lambda: {"commit": "abc", "dirty": False})
    r.check_clean(r.REAL_RESULTS, allow_dirty=False)  # a clean tree runs
    monkeypatch.setattr(r, "tree_state", lambda: {"commit": "unknown", "dirty": "unknown"})
    r.check_clean(r.REAL_RESULTS, allow_dirty=False)  # outside git there is no commit to name: not refused


def test_the_run_writes_the_claims_page(tmp_path):
    d = tmp_path / "nb"
    d.mkdir()
    _book(d / "01_ok.ipynb", ["x = 1"])
    reproduce(profile="tiny", directory=d, output_dir=tmp_path / "out", log=lambda m: None, threads=1,
              results_dir=tmp_path / "results")
    text = (tmp_path / "results" / "CLAIMS.md").read_text()
    assert "# The paper's claims, tested by this run" in text and "not measured in this run" in text
