"""``results/CLAIMS.md``: what this run says about each numbered claim of the paper.

One row per claim the paper makes with a number (:data:`samllava.report.paper_claims.CLAIMS`: Tables 1-11, Fig. 2,
Sec. 3.2 and 5): the paper's effect with the cells it comes from, this run's effect read from the per-run values
its tables pool (``<table>_runs.csv``, :mod:`samllava.report.runs`) with a 95 % interval, and a verdict
(:data:`VERDICTS`).

* A difference (:class:`Paired`) is the mean of the differences ``a - b`` over pairs measured on the same
  images or categories with the same seeds; its interval is a paired percentile bootstrap over those pairs
  (:func:`bootstrap`, :data:`RESAMPLES` resamples, seed :data:`BOOTSTRAP_SEED`).
* The verdict reads the interval against the sign the paper claims: *supported* when it excludes 0 on the
  paper's side, *contradicted* when it excludes 0 on the other side (or every pair differs by exactly 0),
  else *inconclusive at this sample size*; *not testable in this profile* when the profile cannot test the
  claim (random CLIP, the verdict's yes/no, a baseline not implemented; the reason is given), *not measured in
  this run* when the values are missing (a partial or smoke run). A direction on synthetic stand-ins is what
  transfers: their magnitudes are not the paper's.
* A count (:class:`Count`, Table 11) is exact: supported within :data:`COUNT_TOLERANCE` of the paper's.

``write_claims`` writes the page (the reproduce run calls it after the summary); ``claims_frame`` gives one
notebook's rows, from the same tables, for the notebook to show.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from samllava.core import results
from samllava.report import runs as R
from samllava.report.paper_claims import CLAIMS, Claim, Count, Facts, Level, Paired, Shown

__all__ = ["CLAIMS", "Claim", "Count", "Facts", "Level", "Paired", "Shown", "VERDICTS", "bootstrap", "claims_frame",
           "measure", "outcomes", "write_claims"]

REPORT = "CLAIMS.md"
RESAMPLES = 10_000  # bootstrap resamples of the paired differences
BOOTSTRAP_SEED = 0  # the page is the same for the same tables
BOOTSTRAP_CELLS = 2_000_000  # resampled values held in memory at once
LEVEL = 0.95
MIN_PAIRS = 3  # fewer pairs give no interval worth reading
COUNT_TOLERANCE = 0.01  # a parameter count of the same architecture agrees within 1 % (relative)
VERDICTS = ("supported", "contradicted", "inconclusive at this sample size", "not testable in this profile",
            "not measured in this run")
UNTESTABLE, MISSING = VERDICTS[3], VERDICTS[4]


@dataclass(frozen=True)
class Outcome:
    """A claim measured: this run's effect (text), the interval, the number of pairs, the verdict and why."""

    claim: Claim
    ours: str
    verdict: str
    why: str = ""
    effect: float = math.nan
    low: float = math.nan
    high: float = math.nan
    n: int = 0


# --- measuring ---------------------------------------------------------------------------------------------------

def bootstrap(d: np.ndarray, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = BOOTSTRAP_SEED
              ) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``d`` (n,) and the percentile interval of its mean over ``resamples`` resamples
    with replacement (paired: ``d`` holds one difference per pair)."""
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CELLS // d.size)  # resamples drawn at once: a few thousand images fit in memory
    means = np.concatenate([d[rng.integers(0, d.size, size=(min(chunk, resamples - i), d.size))].mean(1)
                            for i in range(0, resamples, chunk)])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(d.mean()), float(low), float(high)


def _read(directory: Path, table: str) -> tuple[pd.DataFrame | None, dict[str, str]]:
    path = directory / f"{table}.csv"
    if not path.is_file():
        return None, {}
    return results.read_table(path), results.read_header(path)


def _verdict(direction: int, low: float, high: float, n: int) -> tuple[str, str]:
    if n < MIN_PAIRS:
        return VERDICTS[2], f"{n} pair(s): fewer than {MIN_PAIRS}"
    if low == high == 0:
        return VERDICTS[1], "no pair differs at all"
    if direction * low > 0 and direction * high > 0:
        return VERDICTS[0], "the interval excludes 0 on the paper's side"
    if direction * low < 0 and direction * high < 0:
        return VERDICTS[1], "the interval excludes 0 on the other side"
    return VERDICTS[2], "the interval contains 0"


def _selection(where: dict) -> str:
    return "(" + ", ".join(f"{k} {v}" for k, v in where.items()) + ")"


def _interval(mean: float, low: float, high: float, n: int, over: str, unit: str) -> str:
    return f"{mean:+.2f} {unit} [{low:+.2f}, {high:+.2f}], {n} pairs ({over})"


def _row(df: pd.DataFrame, pattern: str) -> pd.Series | None:
    rows = df[df.iloc[:, 0].astype(str).map(lambda v: fnmatch.fnmatchcase(v, pattern))]
    return None if rows.empty else rows.iloc[0]


def _count(claim: Claim, m: Count, df: pd.DataFrame) -> Outcome:
    row = _row(df, m.row)
    if row is None or m.column not in row or pd.isna(row[m.column]):
        return Outcome(claim, "—", MISSING, f"no row {m.row!r} in {m.table}")
    ours = float(row[m.column])
    text = f"{ours:,.2f} M counted from the paper profile's configuration"
    if m.of:
        text += f" ({100 * ours / float(row[m.of]):.2f} % of {float(row[m.of]):,.2f} M)"
    if m.below is not None:
        ok = ours < m.below
        return Outcome(claim, text, VERDICTS[0] if ok else VERDICTS[1],
                       f"{'below' if ok else 'not below'} the baselines' {m.below:g} M (their counts as the paper "
                       "reports them)", ours)
    rel = (ours - m.paper) / m.paper
    ok = abs(rel) <= COUNT_TOLERANCE
    text += f": {round(100 * rel, 1) + 0.0:+.1f} % from the paper's"  # + 0.0: never "-0.0"
    why = f"a count of the architecture as configured here, {'within' if ok else 'beyond'} {100 * COUNT_TOLERANCE:g} %"
    return Outcome(claim, text, VERDICTS[0] if ok else VERDICTS[1], why + " of the paper's", ours)


def measure(claim: Claim, directory: Path) -> Outcome:
    """This run's side of ``claim`` from the tables in ``directory``."""
    m = claim.measure
    if m is None:
        return Outcome(claim, "—", UNTESTABLE, claim.blocked(Facts()) or "not measured here")
    name = f"{m.table}_runs" if isinstance(m, (Paired, Level)) else m.table
    df, head = _read(directory, name)
    if df is None:
        return Outcome(claim, "—", MISSING, f"{name}.csv is not in this run")
    facts = Facts.of(head)
    if isinstance(m, Count):
        return _count(claim, m, df)
    reason = claim.blocked(facts)
    if isinstance(m, Shown):
        row = _row(df, m.row)
        shown = "—" if row is None or pd.isna(row.get(m.column)) else \
            f"{float(row[m.column]):,.2f} {m.unit} ({row.iloc[0]})"
        return Outcome(claim, shown, UNTESTABLE if reason else MISSING, reason or "no GPU row in this run")
    if isinstance(m, Level):
        v = R.level_values(df, m.where)
        mean, low, high = bootstrap(v)
        ours = "—" if not v.size else f"{mean:.2f} {m.unit} [{low:.2f}, {high:.2f}], {v.size} values ({m.over})"
        verdict = UNTESTABLE if reason else (MISSING if not v.size else VERDICTS[2])
        return Outcome(claim, ours, verdict, reason or "", mean, low, high, int(v.size))
    d = R.paired_values(df, m.a, m.b)
    if not d.size:
        return Outcome(claim, "—", UNTESTABLE if reason else MISSING,
                       reason or f"{name}.csv has no pairs of {_selection(m.a)} and {_selection(m.b)}")
    mean, low, high = bootstrap(d)
    ours = _interval(mean, low, high, int(d.size), m.over, m.unit)
    if reason:
        return Outcome(claim, ours, UNTESTABLE, reason, mean, low, high, int(d.size))
    verdict, why = _verdict(claim.direction, low, high, int(d.size))
    return Outcome(claim, ours, verdict, why, mean, low, high, int(d.size))


def outcomes(directory: str | Path | None = None, notebook: str | None = None) -> list[Outcome]:
    """Every claim (or ``notebook``'s) measured on the tables of ``directory`` (default ``results/``)."""
    directory = Path(directory or results.RESULTS_DIR)
    return [measure(c, directory) for c in CLAIMS if notebook is None or c.notebook == notebook]


COLUMNS = ("claim", "paper (cells)", "this run (95 % interval)", "verdict", "why", "notebook")


def claims_frame(directory: str | Path | None = None, notebook: str | None = None) -> pd.DataFrame:
    """The rows of CLAIMS.md (all, or one ``notebook``'s, e.g. "10"), from the tables in ``directory``."""
    rows = []
    for o in outcomes(directory, notebook):
        c = o.claim
        why = "; ".join(t for t in (o.why, c.note) if t)
        rows.append(dict(zip(COLUMNS, (f"{c.key} ({c.source}): {c.text}", c.paper, o.ours, o.verdict, why,
                                       c.notebook))))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_claims(directory: str | Path | None = None, run: dict | None = None) -> Path:
    """Write ``CLAIMS.md`` into ``directory`` (default ``results/``) from the tables there."""
    directory = Path(directory or results.RESULTS_DIR)
    frame = claims_frame(directory)
    tally = frame["verdict"].value_counts()
    head = results.header(run, note="written by samllava.report.claims from the tables in this folder: do not "
                                    "edit by hand")
    lines = [
        *(f"> **{k}**: {v}  " for k, v in head),
        "",
        "# The paper's claims, tested by this run",
        "",
        "; ".join(f"{tally.get(v, 0)} {v}" for v in VERDICTS) + f" (of {len(frame)} claims).",
        "",
        "One row per claim the paper makes with a number. *This run*: the mean of the differences over pairs "
        f"measured on the same images or categories with the same seeds, with a {100 * LEVEL:g} % paired bootstrap "
        f"interval ({RESAMPLES:,} resamples of the pairs). *Supported*: the interval excludes 0 on the side "
        "the paper claims; *contradicted*: on the other side; *inconclusive at this sample size*: it contains "
        "0 (more seeds or images would decide). Counts (Table 11) are exact: supported within "
        f"{100 * COUNT_TOLERANCE:g} %. A profile's stand-in data and weights test a claim's direction, not "
        "its magnitude (docs/profiles.md); each notebook shows its own rows.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
        *("| " + " | ".join(str(v).replace("|", "/") for v in r) + " |" for r in frame.itertuples(index=False)),
    ]
    return results.write_text(directory / REPORT, "\n".join(lines) + "\n")
