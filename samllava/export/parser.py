"""The arguments of ``samllava export`` (light: no torch, so that ``samllava --help`` answers at once).

:func:`add_export_parser` adds the command to the ``samllava`` parser's subcommands; its work is
:func:`samllava.export.command.export_cli`.
"""
from __future__ import annotations

import argparse

from samllava.export.spec import MEMORY_CAP

HELP = ("the detection part (verdict, coarse and fine masks) for one category as ONNX graphs with the normal "
        "images baked in, run without torch by python -m samllava.export.runner")


def _count(text: str) -> int:
    """A whole number >= 0 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 0")
    return value


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """``samllava export --support DIR --out model.onnx [...]`` on ``subparsers`` (argparse's); returns the parser."""
    p = subparsers.add_parser("export", help=HELP, description=HELP)
    p.add_argument("--support", required=True, metavar="DIR",
                   help="folder of normal (defect-free) images of the part: the few-shot memory and the verdict's "
                        "thresholds, stored in the graph")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the detection graph, e.g. model.onnx; model.fine.onnx (SAM's decoder) and model.json "
                        "(thresholds, input size, provenance) are written beside it")
    p.add_argument("--calibration", default=None, metavar="DIR",
                   help="folder of other normal images that calibrate the verdict: it becomes a threshold "
                        "(default: the --support images, each left out in turn, which the graph computes)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="a trained model (the --out folder of `samllava train --data` or its last.pt; default: "
                        "the profile's default model, trained once on first use)")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="tiny, offline or paper, or a profile JSON file (default: $SAMLLAVA_PROFILE, else offline)")
    p.add_argument("--category", default=None,
                   help="what the part is, e.g. bottle: the zero-shot CLIP term's words where the profile has one "
                        "(default: 'the part')")
    p.add_argument("--max-patches", type=_count, default=MEMORY_CAP, metavar="N",
                   help=f"memory patches per level kept in the graph: a larger support keeps its greedy coreset and "
                        f"a verdict recalibrated on it (0: keep all; default {MEMORY_CAP})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    return p
