"""``results/REPRODUCTION.md``: every number a reproduce run regenerated, beside the one committed at ``HEAD``.

The committed tables are read from git (``git show REF:results/NAME.csv``) and compared with this run's by
:mod:`samllava.report.comparison`, which puts each cell in one class; the page gives the headline (cells that agree
with the committed run out of those counted), per-table counts, every outside cell and every cell too unstable to
reproduce with the runs that would make it stable. See docs/reproduction.md.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from io import BytesIO
from pathlib import Path

import pandas as pd

from samllava.core import provenance as prov
from samllava.core import results
from samllava.report.comparison import (
    EQUAL_ACROSS_MACHINES, SPREAD_RUNS, STD_FACTOR, UNSTABLE_SPAN, Cell, compare_files, counts, folder_files,
    headline, tolerance_text,
)

REPORT = "REPRODUCTION.md"
REAL_RESULTS = results.REPO_ROOT / "results"  # the committed tables: only a run into this folder is checked


def _git(cwd: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def committed_files(results_dir: str | os.PathLike, ref: str = "HEAD") -> dict[str, bytes]:
    """``{name: bytes}`` of every ``*.csv`` of ``results_dir`` committed at ``ref`` (empty outside git)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return {}
    listing = _git(results_dir, "ls-tree", "-z", "--name-only", ref, "--", ".")
    out = {}
    for path in (listing or b"").decode().split("\0"):
        name = Path(path).name
        if name.endswith(".csv") and (data := _git(results_dir, "show", f"{ref}:./{name}")) is not None:
            out[name[: -len(".csv")]] = data
    return out


def committed_tables(results_dir: str | os.PathLike, ref: str = "HEAD") -> dict[str, pd.DataFrame]:
    """``{name: table}`` as committed at ``ref``; a table not there (or no git) is new, not compared."""
    return {name: results.read_table(BytesIO(data)) for name, data in committed_files(results_dir, ref).items()}


def compare_dir(results_dir: str | os.PathLike, ref: str = "HEAD") -> tuple[list[Cell], dict[str, str]]:
    """Every cell of every table of ``results_dir`` against the tables committed at ``ref``."""
    return compare_files(committed_files(results_dir, ref), folder_files(results_dir), ref)


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return "NaN" if math.isnan(v) else f"{v:.6g}"


def _pipe_table(cols: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    return lines + ["| " + " | ".join(str(p).replace("|", "/") for p in r) + " |" for r in rows]


def _cell_rows(cells: list[Cell], why: bool = True) -> list[str]:
    cols = ["table", "row", "column", "committed", "this run", "tolerance", "class"] + (["why"] if why else [])
    return _pipe_table(cols, [[c.table, c.row, c.column, _fmt(c.committed), _fmt(c.new), tolerance_text(c), c.cls]
                              + ([c.why] if why else []) for c in cells])


def _table_rows(cells: list[Cell], status: dict[str, str]) -> list[str]:
    classes = ["equal", "within", "outside", "unstable", "empty", "machine", "new"]
    rows = []
    for name, text in status.items():
        n = counts([c for c in cells if c.table == name])
        rows.append([f"[{name}]({name}.md)", text, *(n[k] for k in classes)])
    return _pipe_table(["table", "status", *classes], rows)


def report_lines(cells: list[Cell], status: dict[str, str], reference: str = "the committed run") -> list[str]:
    """The body of REPRODUCTION.md: the headline, the rule, per-table counts, the outside and unstable cells."""
    outside = [c for c in cells if c.cls == "outside"]
    unstable = [c for c in cells if c.cls == "unstable"]
    return [
        "# Reproduction check",
        "",
        f"**{headline(cells, reference)}.**",
        "",
        f"Every number of the tables in this folder beside {reference}'s. *Equal*: a deterministic number "
        f"(the paper's, a count, a number with no spread over its seeds) must come back exactly on the same "
        f"machine and within {EQUAL_ACROSS_MACHINES['percent'][1]:g} point on another; *within*: a number that "
        f"moves with training or sampling may move by max({STD_FACTOR:g} x the committed std x sqrt(2/"
        f"{SPREAD_RUNS}), a floor of 1 point for percentages, 5 % otherwise); *unstable*: a tolerance spanning "
        f"more than {UNSTABLE_SPAN['percent'][1]:g} points, or a std of {SPREAD_RUNS} runs: listed below with the "
        "runs that would make it stable, never counted; timings and memory are not judged. This agreement is "
        "with the committed run, not with the paper (results/CLAIMS.md; docs/reproduction.md).",
        "",
        "## Per table",
        "",
        *_table_rows(cells, status),
        "",
        f"## Outside ({len(outside)})",
        "",
        *(_cell_rows(outside) if outside else ["None."]),
        "",
        f"## Too unstable to reproduce ({len(unstable)}): not counted as agreement",
        "",
        *(_cell_rows(unstable) if unstable else ["None."]),
        "",
        f"## All cells ({len(cells)})",
        "",
        "<details><summary>every cell and its class</summary>",
        "",
        *_cell_rows(cells, why=False),
        "",
        "</details>",
    ]


def write_reproduction(results_dir: str | os.PathLike | None = None, ref: str = "HEAD", *,
                       threads: int | None = None, run: dict | None = None) -> tuple[int, int]:
    """Write ``REPRODUCTION.md`` into ``results_dir`` (default ``results/``) comparing its tables with those
    committed at ``ref``; returns (cells that agree, cells counted). ``threads``: the kernels' CPU threads
    (default: ``reproduce_times.json``'s, else the CPU count)."""
    results_dir = Path(results_dir or results.RESULTS_DIR)
    cells, status = compare_dir(results_dir, ref)
    sha = (_git(results_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") or b"").decode().strip()
    head = results.header(run, note="written by samllava.report.reproduction from the tables in this folder and git: "
                                    "do not edit by hand")
    head += [("compared against", f"{ref} = {sha or 'unknown (no git history)'}"), ("cpu", prov.cpu_model()),
             ("threads", str(threads or _threads(results_dir)))]
    lines = [*(f"> **{k}**: {v}  " for k, v in head), "", *report_lines(cells, status)]
    with results.atomic_path(results_dir / REPORT) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return sum(c.agrees for c in cells), sum(c.counted for c in cells)


def check_run(results_dir: str | os.PathLike | None, *, smoke: bool, threads: int | None = None, log=print
              ) -> tuple[int, int] | None:
    """The end of a reproduce run: a full (not smoke) run into the repository's ``results/`` writes
    ``results/REPRODUCTION.md`` and logs how many cells agree with the committed run; any other run is not
    checked (None)."""
    if smoke or Path(results_dir or results.RESULTS_DIR).resolve() != REAL_RESULTS.resolve():
        return None
    agree, counted = write_reproduction(REAL_RESULTS, threads=threads)
    log(f"[reproduce] {agree} of {counted} cells agree with the committed run (results/{REPORT})")
    return agree, counted


def _threads(results_dir: Path) -> int:
    try:
        return int(json.loads((results_dir / "reproduce_times.json").read_text())["threads"])
    except (OSError, ValueError, KeyError, TypeError):
        return os.cpu_count() or 1
