"""The reproduction check (issue #19): each regenerated number beside the committed one, with its tolerance."""
import ast
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from samllava.report import comparison as reproduction
from samllava.report.comparison import compare_table, write_reproduction
from samllava.core.results import read_header, write_table


def _by(cells):
    return {(c.row, c.column): c for c in cells}


def _one(old: dict, new: dict, label="method"):
    return compare_table("t", pd.DataFrame(old), pd.DataFrame(new)), label


def test_computed_cells_within_and_outside_the_floor():
    old = pd.DataFrame({"method": ["a", "b"], "auroc": [90.0, 80.0]})
    new = pd.DataFrame({"method": ["a", "b"], "auroc": [90.9, 78.5]})
    cells = _by(compare_table("t", old, new))
    a, b = cells[("a", "auroc")], cells[("b", "auroc")]
    assert (a.kind, a.tolerance, a.status, a.within) == ("computed", 1.0, "within", True)  # percent: one point
    assert (b.status, b.within) == ("outside", False)


def test_std_column_widens_the_tolerance_with_the_larger_std():
    old = pd.DataFrame({"method": ["a", "b"], "auroc": [90.0, 90.0], "auroc_std": [0.2, 0.2]})
    new = pd.DataFrame({"method": ["a", "b"], "auroc": [92.9, 93.1], "auroc_std": [1.0, 1.0]})
    cells = _by(compare_table("t", old, new))
    assert cells[("a", "auroc")].tolerance == pytest.approx(3.0)  # 3 x max(0.2, 1.0)
    assert cells[("a", "auroc")].within and not cells[("b", "auroc")].within
    assert cells[("a", "auroc_std")].kind == "spread"  # a std is judged as a std (test below)
    # a column named "std" right after the number is its spread (table 5)
    old5 = pd.DataFrame({"K": [1], "method": ["x"], "accuracy": [78.0], "std": [2.0]})
    new5 = pd.DataFrame({"K": [1], "method": ["x"], "accuracy": [83.5], "std": [2.0]})
    assert _by(compare_table("t5", old5, new5))[("1", "accuracy")].tolerance == pytest.approx(6.0)


def test_a_std_may_move_by_the_factor_two_stds_of_three_runs_differ_by():
    # F(2, 2): P(F > x) = 1 / (1 + x), so the two-sided 1 % ratio of variances is 199 and of stds sqrt(199)
    assert reproduction.spread_ratio() == pytest.approx(199 ** 0.5, rel=1e-6)
    old = pd.DataFrame({"m": ["a", "b", "c", "d"], "acc": [50.0] * 4, "acc_std": [0.5, 0.0, 2.0, 0.5]})
    new = pd.DataFrame({"m": ["a", "b", "c", "d"], "acc": [50.0] * 4, "acc_std": [3.2, 9.6, 20.0, 15.0]})
    cells = _by(compare_table("t", old, new))
    assert cells[("a", "acc_std")].within  # 3.2 against the floor of one point: a factor 3.2
    assert cells[("b", "acc_std")].within  # three runs that agreed (0) against 9.6: a factor 9.6
    assert cells[("c", "acc_std")].within  # 20 / 2: a factor 10
    assert not cells[("d", "acc_std")].within  # 15 against the floor of 1: a factor 15
    assert cells[("d", "acc_std")].kind == "spread"
    assert "within a factor 14.1" in reproduction._tolerance_text(cells[("d", "acc_std")])


def test_paper_cells_must_be_equal_to_two_decimals():
    old = pd.DataFrame({"subset": ["A", "B"], "SAM-LLaVA (paper)": [95.6, 93.2], "ours": [90.0, 91.0]})
    new = pd.DataFrame({"subset": ["A", "B"], "SAM-LLaVA (paper)": [95.6000001, 93.3], "ours": [90.0, 91.0]})
    cells = _by(compare_table("t", old, new))
    assert cells[("A", "SAM-LLaVA (paper)")].kind == "paper" and cells[("A", "SAM-LLaVA (paper)")].within
    assert cells[("B", "SAM-LLaVA (paper)")].status == "outside"
    # a row labelled "(paper ..." is the paper's, even in a timing column
    old11 = pd.DataFrame({"model": ["X (paper, L40)"], "latency_ms": [1563.86]})
    new11 = pd.DataFrame({"model": ["X (paper, L40)"], "latency_ms": [1563.0]})
    (cell,) = compare_table("t11", old11, new11)
    assert (cell.kind, cell.status) == ("paper", "outside")


def test_machine_columns_are_shown_not_judged():
    old = pd.DataFrame({"model": ["ours"], "latency_ms": [100.0], "throughput_img_s": [3.0], "peak_memory_GB": [2.0],
                        "training_time_h": [0.1]})
    new = pd.DataFrame({"model": ["ours"], "latency_ms": [500.0], "throughput_img_s": [1.0], "peak_memory_GB": [9.0],
                        "training_time_h": [0.5]})
    cells = compare_table("t", old, new)
    assert {c.kind for c in cells} == {"machine"} and {c.status for c in cells} == {"not judged"}
    assert all(c.within is None and not c.compared for c in cells)
    assert "0 of 0 compared cells within tolerance (0 paper cells equal, 4 machine-dependent" \
        in reproduction.summary_line(cells)


def test_missing_and_new_rows_and_columns():
    old = pd.DataFrame({"method": ["a", "b"], "auroc": [90.0, 80.0], "gone": [1.5, 2.5]})
    new = pd.DataFrame({"method": ["a", "c"], "auroc": [90.0, 70.0], "fresh": [0.5, 0.5]})
    cells = _by(compare_table("t", old, new))
    assert cells[("b", "auroc")].status == "missing" and cells[("b", "auroc")].new is None
    assert cells[("a", "gone")].status == "missing" and cells[("a", "gone")].compared
    assert cells[("c", "auroc")].status == "new" and not cells[("c", "auroc")].compared
    assert cells[("a", "fresh")].status == "new"
    assert reproduction.summary_line(list(cells.values())).startswith("1 of 4 compared cells")


def test_duplicated_labels_match_by_order_and_nan_equals_nan():
    old = pd.DataFrame({"data": ["syn", "syn", "tex"], "K": [1, 2, 1], "auroc": [97.0, 98.0, math.nan]})
    new = pd.DataFrame({"data": ["syn", "syn", "tex"], "K": [1, 2, 1], "auroc": [97.2, 95.0, math.nan]})
    cells = _by(compare_table("t", old, new))
    assert cells[("syn #1", "auroc")].within and not cells[("syn #2", "auroc")].within
    assert cells[("tex", "auroc")].within  # NaN vs NaN
    assert cells[("syn #2", "K")].tolerance == 1e-6  # an integer column is exact
    nan_now = compare_table("t", old, new.assign(auroc=[97.0, 98.0, 50.0]))
    assert _by(nan_now)[("tex", "auroc")].status == "outside"


def test_floors_by_kind_of_number():
    assert reproduction.floor("auroc", 95.0) == 1.0
    assert reproduction.floor("n", 72.0) == 1e-6 and reproduction.floor("total_M", 145.7) == 1e-6
    assert reproduction.floor("x", 3.0, integer=True) == 1e-6
    assert reproduction.floor("loss", 0.5) == pytest.approx(0.025)  # 5 % of a loss, whatever its size
    assert reproduction.floor("tokens", 1000.0) == pytest.approx(50.0)  # over 100: not a percentage
    assert reproduction.is_machine_column("it/s") and not reproduction.is_machine_column("image_auroc_std")


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false",
                    *args], cwd=repo, check=True, capture_output=True)


def test_end_to_end_in_a_git_repository(tmp_path):
    repo, res = tmp_path / "repo", tmp_path / "repo" / "results"
    res.mkdir(parents=True)
    _git(repo, "init", "-q")
    table = pd.DataFrame({"method": ["ours", "ours", "SAM-LLaVA (paper)"], "auroc": [90.0, 85.0, 95.6],
                          "auroc_std": [0.5, 0.5, math.nan], "latency_ms": [10.0, 11.0, math.nan]})
    write_table(table, "x", directory=res)
    write_table(pd.DataFrame({"method": ["a"], "acc": [50.0]}), "y", directory=res)
    _git(repo, "add", "results")
    _git(repo, "commit", "-q", "-m", "results")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    changed = table.copy()
    changed.loc[1, "auroc"] = 80.0  # 5 points off: outside max(3 x 0.5, 1)
    changed.loc[0, "latency_ms"] = 99.0  # machine: not judged
    write_table(changed, "x", directory=res)  # y is left as committed; z is new
    write_table(pd.DataFrame({"method": ["a"], "acc": [1.0]}), "z", directory=res)
    assert reproduction.committed_tables(res).keys() == {"x", "y"}

    within, compared = write_reproduction(res, threads=3)
    assert (within, compared) == (6, 7)  # auroc, std x 2 rows; the paper row (NaN = NaN too); latency not judged
    text = (res / "REPRODUCTION.md").read_text()
    head = read_header(res / "REPRODUCTION.md")
    assert head["compared against"] == f"HEAD = {sha}" and head["threads"] == "3" and head["cpu"]
    assert {"date", "commit", "device", "versions"} <= set(head)
    assert ("6 of 7 compared cells within tolerance (3 paper cells equal, 2 machine-dependent cells not judged)"
            in text)
    assert "## Outside tolerance (1)" in text
    outside = text.split("## Outside tolerance (1)")[1].split("## All cells")[0]
    assert "| x | ours #2 | auroc | 85 | 80 | ± 1.5 | computed | **no** |" in outside
    assert "| [y](y.md) | not rewritten by this run" in text and "| [z](z.md) | new (not at HEAD)" in text
    assert "| x | ours #1 | latency_ms | 10 | 99 | not judged | machine | — |" in text
    assert not list(res.glob(".*tmp"))  # written atomically: no temporary file left


def test_outside_git_every_table_is_new(tmp_path):
    write_table(pd.DataFrame({"method": ["a"], "acc": [50.0]}), "x", directory=tmp_path)
    assert reproduction.committed_tables(tmp_path) == {}
    assert write_reproduction(tmp_path, threads=1) == (0, 0)
    assert "unknown (no git history)" in (tmp_path / "REPRODUCTION.md").read_text()


def test_only_a_full_run_into_the_repository_results_is_checked(tmp_path, monkeypatch):
    real = tmp_path / "repo" / "results"
    real.mkdir(parents=True)
    monkeypatch.setattr(reproduction, "REAL_RESULTS", real)
    logged = []
    assert reproduction.check_run(tmp_path / "elsewhere", smoke=False, threads=1, log=logged.append) is None
    assert reproduction.check_run(real, smoke=True, threads=1, log=logged.append) is None
    assert not (real / "REPRODUCTION.md").exists() and not logged
    assert reproduction.check_run(real, smoke=False, threads=1, log=logged.append) == (0, 0)
    assert (real / "REPRODUCTION.md").is_file()
    assert logged == ["[reproduce] 0 of 0 numbers reproduced within their tolerance (results/REPRODUCTION.md)"]


def test_reproduce_ends_with_the_check():
    # read, not imported: importing samllava.notebook.runner pulls in the whole pipeline (seconds)
    tree = ast.parse((Path(reproduction.__file__).parents[1] / "notebook" / "runner.py").read_text())
    (fn,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "reproduce"]
    line = {c.func.id: c.lineno for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    assert line["check_run"] > line["write_summary"]  # after the summary, the last writer of the run
