"""Does a rerun agree with a reference run? Every cell of two versions of the tables, in one class.

The reference's tables (the committed ones, :mod:`samllava.report.reproduction`, or another folder,
``samllava compare-results``) beside this run's. Rows are matched by their label (the first column; a label that
repeats is matched by its order among its rows), columns by name. Each numeric cell is put in one class
(:func:`judge`):

* ``equal``: a deterministic computation: a paper cell (typed in, equal to :data:`PAPER_DECIMALS` decimals),
  a count, or a number with no spread over its seeds (none stated, or a std of 0). On the machine that wrote
  the reference (same device and package versions in the header) it must come back exactly; on another, within
  :data:`EQUAL_ACROSS_MACHINES` (the last bits of float kernels);
* ``within`` / ``outside``: a number that moves with training or sampling: ``|this run - reference| <=
  max(STD_FACTOR x s x sqrt(2 / SPREAD_RUNS), floor)``, ``s`` the std the *reference* table states for it (a
  noisier rerun does not widen its own tolerance): about three standard errors of the difference of two means of
  :data:`SPREAD_RUNS` runs; the floor comes from :data:`FLOORS`. A std cell is judged by the ratio two stds of
  :data:`SPREAD_RUNS` runs reach at :data:`SPREAD_LEVEL` (:func:`spread_ratio`);
* ``unstable``: a number whose tolerance would span more than :data:`UNSTABLE_SPAN` (10 points for a
  percentage), or a std whose ratio exceeds :data:`MAX_SPREAD_RATIO`: listed with the runs that would make it
  stable, never counted as agreement;
* ``empty``: no number on either side; ``machine``: a timing, speed or memory column (shown, not judged);
* ``new``: a cell only this run has (not counted). A reference cell this run no longer writes, or a number
  against an empty cell, is ``outside``.

The headline counts equal + within out of equal + within + outside: cells that "agree with the committed run",
which says nothing of the paper's numbers (results/CLAIMS.md does). Per-run tables (``*_runs.csv``) are the values
the others pool and are judged through them. See docs/reproduction.md.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import pandas as pd
import scipy.stats

from samllava.core import results

RUNS_SUFFIX = "_runs"  # per-run values (samllava.report.runs): judged through the tables that pool them
PAPER_DECIMALS = 2  # a paper cell must come back equal when rounded to this many decimals
STD_FACTOR = 3.0  # standard errors of the difference of two means a moving number may differ by
SPREAD_RUNS = 3  # the runs a std of these tables is over (the training seeds, samllava.notebook.tables)
# Smallest tolerance of a moving number, by its kind of number: ("absolute", t) or ("relative", fraction of the
# committed value). "percent": a value of at most 100 in magnitude in a column that is not a loss, log-odds or
# count (AUROC, accuracy, IoU in percent: one point); "count": integer columns and counts (the number of images,
# of parameters ``*_M``, K, batch): exact up to float printing; "other": anything else (losses, large values).
FLOORS: dict[str, tuple[str, float]] = {
    "percent": ("absolute", 1.0),
    "count": ("absolute", 1e-6),
    "other": ("relative", 0.05),
}
# An equal cell measured on another machine (device or package versions differ): the last bits of float kernels.
EQUAL_ACROSS_MACHINES: dict[str, tuple[str, float]] = {
    "percent": ("absolute", 0.1),
    "count": ("absolute", 1e-6),
    "other": ("relative", 1e-3),
}
# A moving number whose tolerance spans more than this (2 x tolerance) cannot show agreement: unstable.
UNSTABLE_SPAN: dict[str, tuple[str, float]] = {
    "percent": ("absolute", 10.0),
    "count": ("absolute", math.inf),
    "other": ("relative", 0.2),
}
# Two stds of SPREAD_RUNS runs from one distribution have a variance ratio F(n - 1, n - 1); a std cell is judged
# at its two-sided SPREAD_LEVEL quantile, and is unstable when that ratio exceeds MAX_SPREAD_RATIO.
SPREAD_LEVEL = 0.01
MAX_SPREAD_RATIO = 2.0
MACHINE_WORDS = frozenset({"latency", "throughput", "seconds", "sec", "s", "ms", "h", "time", "memory", "gb", "mb",
                           "speed", "fps"})
COUNT_NAMES = frozenset({"n", "k", "count", "batch", "steps", "images", "shots", "seed", "seeds"})
NOT_PERCENT_WORDS = frozenset({"loss", "log", "odds", "nll", "logit", "logits"})
AGREE = ("equal", "within")  # the classes that count as agreement
COUNTED = ("equal", "within", "outside")  # the headline's denominator


@dataclass(frozen=True)
class Cell:
    """One numeric cell. ``committed``/``new`` are None where the cell is on the other side only; ``tolerance``
    is absolute (a ratio for a std cell), None where none applies; ``why`` says what decided an outside or
    unstable cell (and, when unstable, what would make it stable)."""

    table: str
    row: str
    column: str
    committed: float | None
    new: float | None
    kind: str  # "paper", "count", "value", "spread" or "machine"
    cls: str  # "equal", "within", "outside", "unstable", "empty", "machine" or "new"
    tolerance: float | None = None
    why: str = ""

    @property
    def agrees(self) -> bool:
        return self.cls in AGREE

    @property
    def counted(self) -> bool:
        return self.cls in COUNTED


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


def _amount(rule: dict[str, tuple[str, float]], kind: str, committed: float) -> float:
    how, value = rule[kind]
    return value if how == "absolute" else value * abs(committed)


def floor(column: str, committed: float, integer: bool = False) -> float:
    """The smallest tolerance of a moving number (:data:`FLOORS`)."""
    return _amount(FLOORS, number_kind(column, committed, integer), committed)


@lru_cache(maxsize=None)  # one quantile per run count
def spread_ratio(runs: int = SPREAD_RUNS, level: float = SPREAD_LEVEL) -> float:
    """How many times larger one std of ``runs`` runs may be than another's from the same distribution before
    the pair is rarer than ``level`` (two-sided): the square root of F(runs - 1, runs - 1)'s upper quantile.
    Three runs: 14.1 at 1 %."""
    return float(scipy.stats.f.ppf(1 - level / 2, runs - 1, runs - 1)) ** 0.5


def runs_for_ratio(ratio: float = MAX_SPREAD_RATIO, level: float = SPREAD_LEVEL) -> int:
    """The fewest runs whose stds are judged within ``ratio`` at ``level`` (:func:`spread_ratio`)."""
    n = 2
    while spread_ratio(n, level) > ratio:
        n += 1
    return n


def moving_tolerance(column: str, committed: float, std: float, integer: bool = False,
                     runs: int = SPREAD_RUNS) -> float:
    """The tolerance of a number that moves with training or sampling: ``max(STD_FACTOR x std x sqrt(2 / runs),
    floor)``, ``std`` the committed table's over ``runs`` runs."""
    return max(STD_FACTOR * std * math.sqrt(2 / runs), floor(column, committed, integer))


def runs_for_span(column: str, committed: float, std: float, integer: bool = False) -> int:
    """The fewest runs whose mean has a tolerance (:func:`moving_tolerance`) spanning at most :data:`UNSTABLE_SPAN`."""
    half = _amount(UNSTABLE_SPAN, number_kind(column, committed, integer), committed) / 2
    return max(SPREAD_RUNS + 1, math.ceil(2 * (STD_FACTOR * std / half) ** 2))


def judge(column: str, old: float, new: float, *, kind: str, std: float | None = None, integer: bool = False,
          same_machine: bool = False) -> tuple[str, float | None, str]:
    """``(class, tolerance, why)`` of a cell with a value on both sides (NaN: an empty cell).

    ``kind``: "paper", "machine", "spread" (a std cell) or "value"; ``std``: the committed table's std of the
    cell (None or NaN: none stated). See the module docstring for the classes.
    """
    if kind == "machine":
        return ("empty", None, "") if math.isnan(old) and math.isnan(new) else ("machine", None, "")
    if math.isnan(old) and math.isnan(new):
        return "empty", None, ""
    if math.isnan(old) or math.isnan(new):
        return "outside", None, "a number on one side, an empty cell on the other"
    if kind == "paper":
        ok = round(old, PAPER_DECIMALS) == round(new, PAPER_DECIMALS)
        return ("equal" if ok else "outside"), None, "" if ok else "a paper number changed"
    number = number_kind(column, old, integer)
    if kind == "spread" and abs(old) > 0:
        ratio = spread_ratio()
        if ratio > MAX_SPREAD_RATIO:
            return "unstable", ratio, (f"a std of {SPREAD_RUNS} runs may come back {ratio:.3g}x larger or smaller "
                                       f"({SPREAD_LEVEL:.0%} level); about {runs_for_ratio()} runs to judge it "
                                       f"within a factor {MAX_SPREAD_RATIO:g}")
        fl = floor(column, old, integer)
        a, b = max(abs(old), fl), max(abs(new), fl)
        ok = max(a, b) <= ratio * min(a, b) * (1 + 1e-9)
        return ("within" if ok else "outside"), ratio, "" if ok else f"the std moved by more than a factor {ratio:.3g}"
    if kind == "value" and std is not None and not math.isnan(std) and std > 0:
        tol = moving_tolerance(column, old, std, integer)
        if 2 * tol > _amount(UNSTABLE_SPAN, number, old):
            return "unstable", tol, (f"std {std:.3g}: ± {tol:.3g} as a mean of {SPREAD_RUNS} runs; about "
                                     f"{runs_for_span(column, old, std, integer)} runs (seeds) would bring it under "
                                     f"± {_amount(UNSTABLE_SPAN, number, old) / 2:.3g}")
        ok = abs(new - old) <= tol * (1 + 1e-9)
        return ("within" if ok else "outside"), tol, "" if ok else f"moved {new - old:+.3g}, more than ± {tol:.3g}"
    # a deterministic number: no spread over its seeds (a std of 0, or none stated), a count, a std of 0
    tol = 0.0 if same_machine else _amount(EQUAL_ACROSS_MACHINES, number, old)
    ok = abs(new - old) <= max(tol, 1e-12 * max(1.0, abs(old)))
    where = "the same machine: exactly" if same_machine else f"another machine: ± {tol:.3g}"
    return ("equal" if ok else "outside"), tol, "" if ok else f"a deterministic number moved {new - old:+.3g} ({where})"


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


def compare_table(name: str, committed_df: pd.DataFrame, new_df: pd.DataFrame, same_machine: bool = False
                  ) -> list[Cell]:
    """Every numeric cell of the two versions of one table, classed (see the module docstring)."""
    old_keys, new_keys = _keyed(committed_df), _keyed(new_df)
    keys = list(dict.fromkeys([*old_keys, *new_keys]))
    repeated = {label for label, k in keys if k > 0}
    columns = [str(c) for c in committed_df.columns]
    cells = []
    for key in keys:
        label = key[0] if key[0] not in repeated else f"{key[0]} #{key[1] + 1}"
        at_old, at_new = old_keys.get(key), new_keys.get(key)
        for column in _numeric_columns(committed_df, new_df):
            old, new = _value(committed_df, at_old, column), _value(new_df, at_new, column)
            if old is None and new is None:
                continue
            paper = results.is_paper_column(column) or _is_paper_row(key[0])
            kind = ("paper" if paper else "machine" if is_machine_column(column) else
                    "spread" if is_std_column(column) else "value")
            integer = column in committed_df.columns and pd.api.types.is_integer_dtype(committed_df[column])
            if kind == "value" and (integer or (old is not None and not math.isnan(old)
                                                and number_kind(column, old, integer) == "count")):
                kind = "count"
            if new is None:
                cell = Cell(name, label, str(column), old, None, kind, "outside", why="not written by this run")
            elif old is None:
                cell = Cell(name, label, str(column), None, new, kind, "new")
            else:
                sc = std_column(str(column), columns)
                std = _value(committed_df, at_old, sc) if sc else None
                cls, tol, why = judge(str(column), old, new, kind="value" if kind == "count" else kind, std=std,
                                      integer=integer, same_machine=same_machine)
                cell = Cell(name, label, str(column), old, new, kind, cls, tol, why)
            cells.append(cell)
    return cells


def header_of(text: str) -> dict[str, str]:
    """The provenance lines at the top of a CSV table (``# key: value``) as ``{key: text}``."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("# "):
            break
        key, sep, value = line[2:].partition(": ")
        if sep:
            out[key] = value.rstrip()
    return out


def same_machine(old_text: str, new_text: str) -> bool:
    """Whether two tables were written on one machine with one software stack (device and versions lines)."""
    a, b = header_of(old_text), header_of(new_text)
    return all(a.get(k) and a.get(k) == b.get(k) for k in ("device", "versions"))


def _compare_files(name: str, old: bytes, new: bytes | None) -> list[Cell]:
    old_df = results.read_table(BytesIO(old))
    if new is None:
        return compare_table(name, old_df, old_df.iloc[0:0])
    return compare_table(name, old_df, results.read_table(BytesIO(new)),
                         same_machine(old.decode(errors="replace"), new.decode(errors="replace")))


def compare_files(committed: dict[str, bytes], here: dict[str, bytes], reference: str
                  ) -> tuple[list[Cell], dict[str, str]]:
    """Every cell of the tables ``{name: CSV bytes}`` of this run against the reference's, and each table's
    status. A table whose bytes are the reference's was not rewritten (every write stamps its date): not
    compared."""
    cells, status = [], {}
    for name in sorted({*committed, *here}):
        if name.endswith(RUNS_SUFFIX):
            continue
        if name not in committed:
            status[name] = f"new (not in {reference}): not compared"
        elif name not in here:
            status[name] = "not produced by this run"
            cells += _compare_files(name, committed[name], None)
        elif here[name] == committed[name]:
            status[name] = f"not rewritten by this run (the file is {reference}'s): not compared"
        else:
            status[name] = "compared"
            cells += _compare_files(name, committed[name], here[name])
    return cells, status


def folder_files(directory: str | os.PathLike) -> dict[str, bytes]:
    """``{name: bytes}`` of every ``*.csv`` of a results folder."""
    return {p.stem: p.read_bytes() for p in sorted(Path(directory).glob("*.csv"))}


def compare_dirs(old_dir: str | os.PathLike, new_dir: str | os.PathLike) -> tuple[list[Cell], dict[str, str]]:
    """Every cell of every table of ``new_dir`` against ``old_dir``'s (the reference run)."""
    for d in (old_dir, new_dir):
        if not Path(d).is_dir():
            raise NotADirectoryError(f"{d}: not a results folder")
    return compare_files(folder_files(old_dir), folder_files(new_dir), str(old_dir))


def counts(cells: list[Cell]) -> dict[str, int]:
    """How many cells fall in each class (and ``paper``: the equal cells that are the paper's numbers)."""
    out = {k: sum(c.cls == k for c in cells) for k in ("equal", "within", "outside", "unstable", "empty", "machine",
                                                         "new")}
    out["paper"] = sum(c.kind == "paper" and c.cls == "equal" for c in cells)
    return out


def headline(cells: list[Cell], reference: str = "the committed run") -> str:
    """"A of B cells agree with <reference> (E equal, of them P the paper's; W within; O outside); U unstable,
    M machine-dependent, Z empty on both sides, N new: not counted"."""
    n = counts(cells)
    agree, counted = n["equal"] + n["within"], n["equal"] + n["within"] + n["outside"]
    return (f"{agree} of {counted} cells agree with {reference} ({n['equal']} equal, {n['paper']} of them the "
            f"paper's typed-in numbers; {n['within']} within tolerance; {n['outside']} outside); not counted: "
            f"{n['unstable']} unstable, {n['machine']} machine-dependent, {n['empty']} empty on both sides, "
            f"{n['new']} new")


def tolerance_text(c: Cell) -> str:
    """The tolerance of a cell as a reader checks it."""
    if c.cls in ("machine", "new", "empty"):
        return "not judged"
    if c.kind == "paper":
        return f"equal to {PAPER_DECIMALS} decimals"
    if c.tolerance is None:
        return "—"
    if c.kind == "spread" and c.cls != "equal":
        return f"within a factor {c.tolerance:.3g}"
    return "exactly" if c.tolerance == 0 else f"± {c.tolerance:.3g}"
