"""``samllava compare-results OLD_DIR NEW_DIR``: does a rerun agree with a reference run, cell by cell?

Every table of NEW_DIR beside OLD_DIR's, classed as :mod:`samllava.report.comparison` defines (equal, within,
outside, unstable, empty, machine); prints the headline and every outside or unstable cell with its tolerance.
Exit status 1 when a cell is outside, 0 otherwise (unstable cells are listed, never counted as agreement).
"""
from __future__ import annotations

import argparse

from samllava.report.comparison import compare_dirs, headline, tolerance_text


def add_compare_parser(subparsers) -> argparse.ArgumentParser:
    """The ``compare-results`` sub-command on ``subparsers`` (``argparse``'s ``add_subparsers()``)."""
    p = subparsers.add_parser("compare-results", help="compare every table of two results folders cell by cell; "
                                                      "exit 1 when a cell is outside its tolerance")
    p.add_argument("old_dir", metavar="OLD_DIR", help="the reference run's results folder (e.g. the committed one)")
    p.add_argument("new_dir", metavar="NEW_DIR", help="the rerun's results folder")
    return p


def compare_results_cli(args, out=print) -> int:
    """``samllava compare-results``: the headline, then one line per outside or unstable cell; 1 if any is outside."""
    cells, _ = compare_dirs(args.old_dir, args.new_dir)
    out(headline(cells, reference=args.old_dir) + ".")
    for cls in ("outside", "unstable"):
        listed = [c for c in cells if c.cls == cls]
        if listed:
            out(f"{cls} ({len(listed)}):")
        for c in listed:
            out(f"  {cls}: {c.table} | {c.row} | {c.column}: {_number(c.committed)} -> {_number(c.new)} "
                f"(tolerance {tolerance_text(c)}){': ' + c.why if c.why else ''}")
    return 1 if any(c.cls == "outside" for c in cells) else 0


def _number(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"
