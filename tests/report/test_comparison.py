"""The reproduction check (issues #19, #34): every regenerated cell in one class, a tolerance from the committed
run's own spread, and a check that can fail."""
import argparse
import ast
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from samllava.cli.compare import add_compare_parser, compare_results_cli
from samllava.core import provenance
from samllava.core.results import read_header, write_table
from samllava.report import comparison, reproduction
from samllava.report.comparison import compare_table, headline
from samllava.report.reproduction import write_reproduction


def _by(cells):
    return {(c.row, c.column): c for c in cells}


def _table5(accuracy_k2: float) -> pd.DataFrame:
    """Table 5's layout: a 144-image accuracy at K = 2 whose std over its runs is 0 (answers of the verdict)."""
    return pd.DataFrame({"K": [1, 2], "method": ["SAM-LLaVA (this run)"] * 2, "accuracy": [86.8, accuracy_k2],
                         "std": [0.98, 0.0], "paper MVTec-AD": [math.nan, math.nan]})


def test_two_answers_of_144_moved_in_a_cell_with_std_0_is_outside():
    committed = 100 * 136 / 144
    cells = _by(compare_table("table5", _table5(committed), _table5(100 * 134 / 144)))
    cell = cells[("2", "accuracy")]
    assert cell.cls == "outside" and "deterministic" in cell.why  # std 0: a deterministic number, equal or not
    across = _by(compare_table("table5", _table5(committed), _table5(100 * 134 / 144), same_machine=False))
    assert across[("2", "accuracy")].tolerance == 0.1  # another machine: the last bits of float kernels, not answers
    same = _by(compare_table("table5", _table5(committed), _table5(committed + 1e-9), same_machine=True))
    assert same[("2", "accuracy")].cls == "outside" and same[("2", "accuracy")].tolerance == 0.0  # one machine: bytes
    assert _by(compare_table("table5", _table5(committed), _table5(committed)))[("2", "accuracy")].cls == "equal"


def test_a_cell_whose_std_is_21_points_is_unstable_not_within():
    old = pd.DataFrame({"data": ["textiles"], "yes_no_auroc": [72.2], "yes_no_auroc_std": [21.0]})
    new = pd.DataFrame({"data": ["textiles"], "yes_no_auroc": [72.2], "yes_no_auroc_std": [21.0]})
    cells = _by(compare_table("answers_vs_verdict", old, new))
    value, spread = cells[("textiles", "yes_no_auroc")], cells[("textiles", "yes_no_auroc_std")]
    assert value.cls == "unstable" and not value.agrees and not value.counted  # even though it came back equal
    assert value.tolerance == pytest.approx(3 * 21.0 * (2 / 3) ** 0.5)
    assert "about 318 runs" in value.why  # the runs that would bring ± under 5 points: 0.72 x 21^2
    assert spread.cls == "unstable" and "14.1x" in spread.why  # a std of 3 runs: a factor 14.1 at 1 %
    assert "0 of 0 cells agree" in headline(list(cells.values()))


def test_the_tolerance_is_the_committed_runs_own_spread():
    old = pd.DataFrame({"method": ["a", "b"], "auroc": [90.0, 90.0], "auroc_std": [0.5, 1.0]})
    new = pd.DataFrame({"method": ["a", "b"], "auroc": [91.9, 92.3], "auroc_std": [4.0, 1.0]})
    cells = _by(compare_table("t", old, new))
    a, b = cells[("a", "auroc")], cells[("b", "auroc")]
    assert a.tolerance == pytest.approx(3 * 0.5 * (2 / 3) ** 0.5)  # 1.22, above the floor of one point
    assert a.cls == "outside"  # the rerun's std of 4 does not widen its own tolerance
    assert b.tolerance == pytest.approx(3 * (2 / 3) ** 0.5) and b.cls == "within"
    # a column named "std" right after the number is its spread (Table 5)
    t5 = _by(compare_table("t5", _table5(90.0), _table5(90.0).assign(accuracy=[88.5, 90.0])))
    assert t5[("1", "accuracy")].cls == "within" and t5[("1", "accuracy")].tolerance == pytest.approx(2.4, abs=0.01)


def test_empty_cells_are_their_own_class_and_empty_against_a_number_is_outside():
    old = pd.DataFrame({"m": ["a", "b", "X (paper)"], "acc": [math.nan, math.nan, math.nan], "acc_std": [math.nan] * 3})
    new = pd.DataFrame({"m": ["a", "b", "X (paper)"], "acc": [math.nan, 50.0, math.nan], "acc_std": [math.nan] * 3})
    cells = _by(compare_table("t", old, new))
    assert cells[("a", "acc")].cls == "empty" and not cells[("a", "acc")].counted
    assert cells[("b", "acc")].cls == "outside" and "empty cell" in cells[("b", "acc")].why
    assert cells[("X (paper)", "acc")].cls == "empty"
    assert headline(list(cells.values())).startswith("0 of 1 cells agree with the committed run")


def test_paper_cells_are_equal_to_two_decimals_and_counted_apart():
    old = pd.DataFrame({"subset": ["A", "B"], "SAM-LLaVA (paper)": [95.6, 93.2], "ours": [90.0, 91.0]})
    new = pd.DataFrame({"subset": ["A", "B"], "SAM-LLaVA (paper)": [95.6000001, 93.3], "ours": [90.0, 91.0]})
    cells = compare_table("t", old, new)
    by = _by(cells)
    assert by[("A", "SAM-LLaVA (paper)")].kind == "paper" and by[("A", "SAM-LLaVA (paper)")].cls == "equal"
    assert by[("B", "SAM-LLaVA (paper)")].cls == "outside"
    assert "3 of 4 cells agree with the committed run (3 equal, 1 of them the paper's" in headline(cells)
    old11 = pd.DataFrame({"model": ["X (paper, L40)"], "latency_ms": [1563.86]})  # a paper row, even in a timing column
    (cell,) = compare_table("t11", old11, old11.assign(latency_ms=[1563.0]))
    assert (cell.kind, cell.cls) == ("paper", "outside")


def test_machine_columns_are_shown_not_judged():
    old = pd.DataFrame({"model": ["ours"], "latency_ms": [100.0], "throughput_img_s": [3.0], "peak_memory_GB": [2.0],
                        "training_time_h": [0.1]})
    new = old.assign(latency_ms=[500.0], throughput_img_s=[1.0], peak_memory_GB=[9.0], training_time_h=[0.5])
    cells = compare_table("t", old, new)
    assert {c.cls for c in cells} == {"machine"} and not any(c.counted for c in cells)
    assert "0 of 0 cells agree" in headline(cells) and "4 machine-dependent" in headline(cells)


def test_missing_and_new_rows_and_columns_counts_and_duplicated_labels():
    old = pd.DataFrame({"method": ["a", "b"], "auroc": [90.0, 80.0], "gone": [1.5, 2.5]})
    new = pd.DataFrame({"method": ["a", "c"], "auroc": [90.0, 70.0], "fresh": [0.5, 0.5]})
    cells = _by(compare_table("t", old, new))
    assert cells[("b", "auroc")].cls == "outside" and cells[("b", "auroc")].why == "not written by this run"
    assert cells[("a", "gone")].cls == "outside"
    assert cells[("c", "auroc")].cls == "new" and cells[("a", "fresh")].cls == "new"
    assert headline(list(cells.values())).startswith("1 of 4 cells agree")
    old = pd.DataFrame({"data": ["syn", "syn"], "K": [1, 2], "auroc": [97.0, 98.0], "auroc_std": [0.5, 0.5]})
    new = old.assign(auroc=[97.2, 95.0])
    dup = _by(compare_table("t", old, new))
    assert dup[("syn #1", "auroc")].cls == "within" and dup[("syn #2", "auroc")].cls == "outside"
    assert dup[("syn #2", "K")].kind == "count" and dup[("syn #2", "K")].cls == "equal"


def test_floors_and_spans_by_kind_of_number():
    assert comparison.floor("auroc", 95.0) == 1.0
    assert comparison.floor("n", 72.0) == 1e-6 and comparison.floor("total_M", 145.7) == 1e-6
    assert comparison.floor("x", 3.0, integer=True) == 1e-6
    assert comparison.floor("loss", 0.5) == pytest.approx(0.025)  # 5 % of a loss, whatever its size
    assert comparison.floor("tokens", 1000.0) == pytest.approx(50.0)  # over 100: not a percentage
    assert comparison.is_machine_column("it/s") and not comparison.is_machine_column("image_auroc_std")
    # F(2, 2): P(F > x) = 1 / (1 + x), so the two-sided 1 % ratio of variances is 199 and of stds sqrt(199)
    assert comparison.spread_ratio() == pytest.approx(199 ** 0.5, rel=1e-6)
    assert comparison.spread_ratio(comparison.runs_for_ratio()) <= comparison.MAX_SPREAD_RATIO
    # a std of 2 points: ± 4.9, within the 10-point span; 2.1: unstable
    assert comparison.judge("acc", 80.0, 80.0, kind="value", std=2.0)[0] == "within"
    assert comparison.judge("acc", 80.0, 80.0, kind="value", std=2.1)[0] == "unstable"


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
    write_table(pd.DataFrame({"arm": ["a"], "value": [1.0]}), "x_runs", directory=res)
    _git(repo, "add", "results")
    _git(repo, "commit", "-q", "-m", "results")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    changed = table.copy()
    changed.loc[1, "auroc"] = 80.0  # 5 points off: outside max(3 x 0.5 x 0.82, 1)
    changed.loc[0, "latency_ms"] = 99.0  # machine: not judged
    write_table(changed, "x", directory=res)  # y is left as committed; z is new
    write_table(pd.DataFrame({"method": ["a"], "acc": [1.0]}), "z", directory=res)
    write_table(pd.DataFrame({"arm": ["a"], "value": [2.0]}), "x_runs", directory=res)  # judged through x
    assert reproduction.committed_tables(res).keys() == {"x", "y", "x_runs"}

    agree, counted = write_reproduction(res, threads=3)
    # auroc x 2 (one outside), the two stds (unstable: 3 runs), the paper cell (equal), its empty std
    assert (agree, counted) == (2, 3)
    text = (res / "REPRODUCTION.md").read_text()
    head = read_header(res / "REPRODUCTION.md")
    assert head["compared against"] == f"HEAD = {sha}" and head["threads"] == "3" and head["cpu"]
    assert {"date", "commit", "device", "versions"} <= set(head)
    assert "**2 of 3 cells agree with the committed run (1 equal, 1 of them the paper's typed-in numbers; " \
           "1 within tolerance; 1 outside); not counted: 2 unstable, 2 machine-dependent, 2 empty" in text
    assert "reproduced" not in text
    outside = text.split("## Outside (1)")[1].split("## Too unstable")[0]
    assert "| x | ours #2 | auroc | 85 | 80 | ± 1.22 | outside | moved -5, more than ± 1.22 |" in outside
    assert "## Too unstable to reproduce (2): not counted as agreement" in text
    assert "| [y](y.md) | not rewritten by this run" in text and "| [z](z.md) | new (not in HEAD)" in text
    assert "x_runs" not in text
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
    assert logged == ["[reproduce] 0 of 0 cells agree with the committed run (results/REPRODUCTION.md)"]


def _run_dirs(tmp_path, new_table: pd.DataFrame, old_table: pd.DataFrame | None = None):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    run = provenance.provenance(profile="offline")
    write_table(old_table if old_table is not None else _table5(100 * 136 / 144), "table5", directory=old_dir, run=run)
    write_table(new_table, "table5", directory=new_dir, run={**run, "date": "another day"})  # a rerun: other bytes
    return str(old_dir), str(new_dir)


def _cli(old_dir, new_dir):
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    add_compare_parser(sub)
    args = sub.choices["compare-results"].parse_args([old_dir, new_dir])
    lines = []
    return compare_results_cli(args, out=lines.append), lines


def test_compare_results_passes_an_unchanged_rerun(tmp_path):
    status, lines = _cli(*_run_dirs(tmp_path, _table5(100 * 136 / 144)))
    assert status == 0
    assert lines[0].startswith("3 of 3 cells agree with") and "0 outside" in lines[0]


def test_compare_results_fails_on_a_planted_two_answer_drift_and_an_empty_cell(tmp_path):
    drifted = _table5(100 * 134 / 144)
    status, lines = _cli(*_run_dirs(tmp_path, drifted))
    assert status == 1
    planted = "  outside: table5 | 2 | accuracy: 94.4444 -> 93.0556 (tolerance exactly)"
    assert any(ln.startswith(planted) for ln in lines)
    emptied = _table5(100 * 136 / 144).assign(accuracy=[86.8, math.nan])
    status, lines = _cli(*_run_dirs(tmp_path, emptied))
    assert status == 1 and any("-> nan" in ln.lower() and "empty cell" in ln for ln in lines)
    with pytest.raises(NotADirectoryError):
        comparison.compare_dirs(tmp_path / "nowhere", tmp_path)


def test_compare_results_lists_unstable_cells_with_their_tolerance(tmp_path):
    old = pd.DataFrame({"data": ["textiles"], "auroc": [72.2], "auroc_std": [21.0]})
    status, lines = _cli(*_run_dirs(tmp_path, old.assign(auroc=[10.0]), old))
    assert status == 0  # unstable: listed, never counted, never failing
    assert any(ln.startswith("  unstable: table5 | textiles | auroc: 72.2 -> 10 (tolerance ± 51.4)") for ln in lines)


def test_reproduce_ends_with_the_summary_the_claims_and_the_check():
    # read, not imported: importing samllava.notebook.runner pulls in the whole pipeline (seconds)
    tree = ast.parse((Path(reproduction.__file__).parents[1] / "notebook" / "runner.py").read_text())
    (fn,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "reproduce"]
    line = {c.func.id: c.lineno for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    assert line["check_run"] > line["write_claims"] > line["write_summary"]
