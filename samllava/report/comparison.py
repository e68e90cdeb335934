"""``results/REPRODUCTION.md``: every number the reproduce run regenerated, beside the committed one.

The committed tables are read from git (``git show REF:results/NAME.csv``); this run's from the folder.
Rows are matched by their label (the first column; a label that repeats is matched by its order among
its rows) and columns by name. Each numeric cell is one of four kinds:

* ``paper``: a column holding the paper's numbers (:func:`samllava.core.results.is_paper_column`) or a row
  labelled ``... (paper ...)``; typed in, so it must come back equal to :data:`PAPER_DECIMALS` decimals;
* ``machine``: a timing, speed or memory column (:func:`is_machine_column`); it depends on the machine and
  its load, so it is shown but never judged;
* ``spread``: a std column (:func:`is_std_column`); a std from a few runs is itself uncertain, so it is within
  when the larger of the two stds (each raised to the floor) is at most :func:`spread_ratio` times the smaller;
* ``computed``: everything else; within tolerance when ``|this run - committed| <= tolerance`` with
  ``tolerance = max(STD_FACTOR x the std the table states for the cell, floor)``, the std being the
  larger of the committed and this run's value in the cell's companion std column (:func:`std_column`),
  and the floor coming from :data:`FLOORS` by the cell's kind of number (:func:`floor`).

NaN against NaN is equal. A cell on one side only is "missing" (committed, not produced now: counted as
compared and not within) or "new" (not compared). A table whose file is byte-for-byte the committed one
was not rewritten by this run (every write stamps its date) and is not compared. See docs/reproduction.md.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import pandas as pd
import scipy.stats

from samllava.core import provenance as prov
from samllava.core import results

REPORT = "REPRODUCTION.md"
REAL_RESULTS = results.REPO_ROOT / "results"  # the committed tables: only a run into this folder is checked
PAPER_DECIMALS = 2  # a paper cell must come back equal when rounded to this many decimals
STD_FACTOR = 3.0  # a computed cell may move by this many of the stds its table states
# Smallest tolerance of a computed cell, by its kind of number: ("absolute", t) or ("relative", fraction of
# the committed value). "percent": a value of at most 100 in magnitude in a column that is not a loss, log-odds
# or count (AUROC, accuracy, IoU, ... in percent: one point); "count": integer columns and counts (the number of
# images, of parameters ``*_M``, K, batch): exact up to float printing; "other": anything else (losses, large values).
FLOORS: dict[str, tuple[str, float]] = {
    "percent": ("absolute", 1.0),
    "count": ("absolute", 1e-6),
    "other": ("relative", 0.05),
}
# A std of n runs: two faithful reproductions' variances have the ratio F(n - 1, n - 1). The smallest spreads
# here come from 3 training seeds; a std cell is judged at the two-sided SPREAD_LEVEL of that distribution.
SPREAD_RUNS = 3
SPREAD_LEVEL = 0.01
MACHINE_WORDS = frozenset({"latency", "throughput", "seconds", "sec", "s", "ms", "h", "time", "memory", "gb", "mb",
                           "speed", "fps"})
COUNT_NAMES = frozenset({"n", "k", "count", "batch", "steps", "images", "shots", "seed", "seeds"})
NOT_PERCENT_WORDS = frozenset({"loss", "log", "odds", "nll", "logit", "logits"})


@dataclass(frozen=True)
class Cell:
    """One numeric cell. ``committed``/``new`` are None where the cell is on the other side only."""

    table: str
    row: str
    column: str
    committed: float | None
    new: float | None
    kind: str  # "paper", "machine", "spread" or "computed"
    tolerance: float | None  # None: paper (equal to PAPER_DECIMALS decimals) or machine (not judged); spread: a ratio
    status: str  # "within", "outside", "not judged", "missing" or "new"

    @property
    def compared(self) -> bool:
        return self.status in ("within", "outside") or (self.status == "missing" and self.kind != "machine")

    @property
    def within(self) -> bool | None:
        return self.status == "within" if self.compared else None


def _words(column: str) -> list[str]:
    return [w for w in re.split(r"[^0-9a-z]+", str(column).lower()) if w]


def is_machine_column(column: str) -> bool:
    """A timing, speed or memory column (``latency_ms``, ``throughput_img_s``, ``peak_memory_GB``, ``it/s``)."""
    return "it/s" in str(column).lower() or bool(MACHINE_WORDS & set(_words(column)))


def is_std_column(column: str) -> bool:
    """A column stating a spread: ``*_std``, ``std``, ``... ± ...``."""
    return "±" in str(column) or "std" in _words(column)


def std_column(column: str, columns: list[str]) -> str | None:
    """The std column of ``column``: ``<column>_std`` / ``<column> std`` / ``<column> ±``, else a column
    named ``std`` (or ``±``) right after it."""
    if is_std_column(column):
        return None
    for name in (f"{column}_std", f"{column} std", f"{column} (std)", f"{column} ±", f"{column}_sd"):
        if name in columns:
            return name
    at = columns.index(column) if column in columns else -1
    if 0 <= at < len(columns) - 1 and str(columns[at + 1]).strip().lower() in ("std", "±", "sd"):
        return columns[at + 1]
    return None


def number_kind(column: str, committed: float, integer: bool = False) -> str:
    """The key of :data:`FLOORS` for a committed value of ``column`` (``integer``: an integer column)."""
    name = str(column).strip()
    counted = name.lower() in COUNT_NAMES or name.lower().startswith("n_") or name.lower().endswith("_count")
    if integer or counted or name.endswith("_M"):  # _M: millions of parameters, counted from the configuration
        return "count"
    if abs(committed) <= 100 and not NOT_PERCENT_WORDS & set(_words(column)):
        return "percent"
    return "other"


def floor(column: str, committed: float, integer: bool = False) -> float:
    """The smallest tolerance of a computed cell (:data:`FLOORS`)."""
    how, value = FLOORS[number_kind(column, committed, integer)]
    return value if how == "absolute" else value * abs(committed)


@lru_cache(maxsize=None)  # one quantile for all the std cells of a report
def spread_ratio(runs: int = SPREAD_RUNS, level: float = SPREAD_LEVEL) -> float:
    """How many times larger one std of ``runs`` runs may be than another's from the same distribution before
    the pair is rarer than ``level`` (two-sided): the square root of F(runs - 1, runs - 1)'s upper quantile.
    Three runs: 14.1 at 1 %."""
    return float(scipy.stats.f.ppf(1 - level / 2, runs - 1, runs - 1)) ** 0.5


def _judge_spread(column: str, old: float, new: float, integer: bool) -> tuple[float | None, str]:
    """(ratio allowed, status) of a std cell on both sides; a std below the floor counts as the floor (three
    runs that agree give 0)."""
    if math.isnan(old) or math.isnan(new):
        return None, "within" if math.isnan(old) and math.isnan(new) else "outside"
    fl = floor(column, max(abs(old), abs(new)), integer)
    a, b = max(abs(old), fl), max(abs(new), fl)
    ratio = spread_ratio()
    return ratio, "within" if max(a, b) <= ratio * min(a, b) * (1 + 1e-9) else "outside"


def _is_paper_row(label: str) -> bool:
    return "(paper" in label.lower()


def _keyed(df: pd.DataFrame) -> dict[tuple[str, int], int]:
    """``(label, k) -> position``: the k-th row (from 0) with that label in the first column."""
    seen: dict[str, int] = {}
    out = {}
    for pos, label in enumerate(df.iloc[:, 0].map(str)):
        k = seen.get(label, 0)
        seen[label] = k + 1
        out[(label, k)] = pos
    return out


def _numeric_columns(old: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    cols = list(dict.fromkeys([*old.columns[1:], *new.columns[1:]]))
    return [c for c in cols if any(c in df.columns and pd.api.types.is_numeric_dtype(df[c]) for df in (old, new))]


def _value(df: pd.DataFrame, pos: int | None, column: str) -> float | None:
    if pos is None or column not in df.columns:
        return None
    try:
        return float(df[column].iloc[pos])
    except (TypeError, ValueError):
        return math.nan


def _judge(column: str, old: float, new: float, paper: bool, spread: float, integer: bool) -> tuple[float | None, str]:
    """(tolerance, status) of a cell on both sides."""
    if math.isnan(old) or math.isnan(new):
        return None, "within" if math.isnan(old) and math.isnan(new) else "outside"
    if paper:
        return None, "within" if round(old, PAPER_DECIMALS) == round(new, PAPER_DECIMALS) else "outside"
    tol = max(STD_FACTOR * spread, floor(column, old, integer))
    return tol, "within" if abs(new - old) <= tol * (1 + 1e-9) else "outside"


def _spread(old: pd.DataFrame, new: pd.DataFrame, at: tuple[int | None, int | None], column: str) -> float:
    stds = []
    for df, pos in zip((old, new), at):
        sc = std_column(column, list(df.columns))
        v = _value(df, pos, sc) if sc else None
        if v is not None and not math.isnan(v):
            stds.append(abs(v))
    return max(stds, default=0.0)


def compare_table(name: str, committed_df: pd.DataFrame, new_df: pd.DataFrame) -> list[Cell]:
    """Every numeric cell of the two versions of one table (see the module docstring)."""
    old_keys, new_keys = _keyed(committed_df), _keyed(new_df)
    keys = list(dict.fromkeys([*old_keys, *new_keys]))
    repeated = {label for label, k in keys if k > 0}
    cells = []
    for key in keys:
        label = key[0] if key[0] not in repeated else f"{key[0]} #{key[1] + 1}"
        at = (old_keys.get(key), new_keys.get(key))
        for column in _numeric_columns(committed_df, new_df):
            old, new = _value(committed_df, at[0], column), _value(new_df, at[1], column)
            if old is None and new is None:
                continue
            paper = results.is_paper_column(column) or _is_paper_row(key[0])
            kind = ("paper" if paper else "machine" if is_machine_column(column) else
                    "spread" if is_std_column(column) else "computed")
            integer = column in committed_df.columns and pd.api.types.is_integer_dtype(committed_df[column])
            if old is None or new is None:
                tol, status = None, "missing" if new is None else "new"
            elif kind == "machine":
                tol, status = None, "not judged"
            elif kind == "spread":
                tol, status = _judge_spread(column, old, new, integer)
            else:
                tol, status = _judge(column, old, new, paper, _spread(committed_df, new_df, at, column), integer)
            cells.append(Cell(name, label, str(column), old, new, kind, tol, status))
    return cells


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
    """Every cell of every table of ``results_dir`` against ``ref``, and each table's status."""
    results_dir = Path(results_dir)
    committed = committed_files(results_dir, ref)
    here = {p.stem: p for p in sorted(results_dir.glob("*.csv"))}
    cells, status = [], {}
    for name in sorted({*committed, *here}):
        if name not in committed:
            status[name] = f"new (not at {ref}): not compared"
        elif name not in here:
            status[name] = "not produced by this run"
            old = results.read_table(BytesIO(committed[name]))
            cells += compare_table(name, old, old.iloc[0:0])
        elif here[name].read_bytes() == committed[name]:
            status[name] = f"not rewritten by this run (the file is the one at {ref}): not compared"
        else:
            status[name] = "compared"
            cells += compare_table(name, results.read_table(BytesIO(committed[name])), results.read_table(here[name]))
    return cells, status


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return "NaN" if math.isnan(v) else f"{v:.6g}"


def _tolerance_text(c: Cell) -> str:
    if c.kind == "machine":
        return "not judged"
    if c.kind == "paper":
        return f"equal to {PAPER_DECIMALS} decimals"
    if c.kind == "spread" and c.tolerance is not None:
        return f"within a factor {c.tolerance:.3g}"
    return "—" if c.tolerance is None else f"± {c.tolerance:.3g}"


def _cell_rows(cells: list[Cell]) -> list[str]:
    shown = {"within": "yes", "outside": "**no**", "missing": "**no** (missing)", "new": "new", "not judged": "—"}
    cols = ["table", "row", "column", "committed", "this run", "tolerance", "kind", "within"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for c in cells:
        parts = [c.table, c.row, c.column, _fmt(c.committed), _fmt(c.new), _tolerance_text(c), c.kind, shown[c.status]]
        lines.append("| " + " | ".join(str(p).replace("|", "/") for p in parts) + " |")
    return lines


def _table_rows(cells: list[Cell], status: dict[str, str]) -> list[str]:
    cols = ["table", "status", "compared", "within", "outside or missing", "paper equal", "machine (not judged)", "new"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for name, text in status.items():
        mine = [c for c in cells if c.table == name]
        n = sum(c.compared for c in mine)
        ok = sum(c.status == "within" for c in mine)
        counts = [n, ok, n - ok, sum(c.kind == "paper" and c.status == "within" for c in mine),
                  sum(c.status == "not judged" for c in mine), sum(c.status == "new" for c in mine)]
        lines.append(f"| [{name}]({name}.md) | {text} | " + " | ".join(map(str, counts)) + " |")
    return lines


def summary_line(cells: list[Cell]) -> str:
    """"N of M compared cells within tolerance (P paper cells equal, Q machine-dependent cells not judged)"."""
    within = sum(c.within is True for c in cells)
    paper = sum(c.kind == "paper" and c.within is True for c in cells)
    machine = sum(c.status == "not judged" for c in cells)
    return (f"{within} of {sum(c.compared for c in cells)} compared cells within tolerance ({paper} paper cells "
            f"equal, {machine} machine-dependent cells not judged)")


def write_reproduction(results_dir: str | os.PathLike | None = None, ref: str = "HEAD", *,
                       threads: int | None = None, run: dict | None = None) -> tuple[int, int]:
    """Write ``REPRODUCTION.md`` into ``results_dir`` (default ``results/``) comparing its tables with those
    committed at ``ref``; returns (cells within tolerance, cells compared). ``threads``: the kernels' CPU
    threads (default: ``reproduce_times.json``'s, else the CPU count)."""
    results_dir = Path(results_dir or results.RESULTS_DIR)
    cells, status = compare_dir(results_dir, ref)
    sha = (_git(results_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") or b"").decode().strip()
    head = results.header(run, note="written by samllava.report.comparison from the tables in this folder and git: "
                                    "do not edit by hand")
    head += [("compared against", f"{ref} = {sha or 'unknown (no git history)'}"), ("cpu", prov.cpu_model()),
             ("threads", str(threads or _threads(results_dir)))]
    outside = [c for c in cells if c.compared and not c.within]
    lines = [
        *(f"> **{k}**: {v}  " for k, v in head),
        "",
        "# Reproduction check",
        "",
        f"**{summary_line(cells)}.**",
        "",
        f"Every number this run wrote in the tables of this folder beside the one committed at `{ref}`. "
        f"Paper cells must come back equal to {PAPER_DECIMALS} decimals; a computed cell may move by "
        f"max({STD_FACTOR:g} x the std its table states, a floor: 1 point for percentages, exact for counts, "
        "5 % otherwise); timings and memory depend on the machine and are not judged (docs/reproduction.md).",
        "",
        "## Per table",
        "",
        *_table_rows(cells, status),
        "",
        f"## Outside tolerance ({len(outside)})",
        "",
        *(_cell_rows(outside) if outside else ["None: every compared cell is within its tolerance."]),
        "",
        f"## All cells ({len(cells)})",
        "",
        "<details><summary>every cell: compared, machine-dependent (not judged), missing or new</summary>",
        "",
        *_cell_rows(cells),
        "",
        "</details>",
    ]
    with results.atomic_path(results_dir / REPORT) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return sum(c.within is True for c in cells), sum(c.compared for c in cells)


def check_run(results_dir: str | os.PathLike | None, *, smoke: bool, threads: int | None = None, log=print
              ) -> tuple[int, int] | None:
    """The end of a reproduce run: a full (not smoke) run into the repository's ``results/`` writes
    ``results/REPRODUCTION.md`` and logs how many numbers came back; any other run is not checked (None)."""
    if smoke or Path(results_dir or results.RESULTS_DIR).resolve() != REAL_RESULTS.resolve():
        return None
    within, compared = write_reproduction(REAL_RESULTS, threads=threads)
    log(f"[reproduce] {within} of {compared} numbers reproduced within their tolerance (results/{REPORT})")
    return within, compared


def _threads(results_dir: Path) -> int:
    try:
        return int(json.loads((results_dir / "reproduce_times.json").read_text())["threads"])
    except (OSError, ValueError, KeyError, TypeError):
        return os.cpu_count() or 1
