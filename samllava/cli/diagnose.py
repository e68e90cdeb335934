"""``samllava diagnose IMAGE [IMAGE|FOLDER ...] --support DIR --out DIR``: per image a mask, an overlay and a
report; a summary.csv (:class:`samllava.diagnose.run.Diagnoser`)."""
from __future__ import annotations

import sys

from samllava.cli.common import check_dtype, device_of
from samllava.core.config import load_profile
from samllava.diagnose.files import check_readable, gather_images
from samllava.diagnose.report import report_line
from samllava.diagnose.run import Diagnoser, normal_images


def diagnose_cli(args) -> int:
    """Every image and normal image is opened before the model is loaded (or trained on first use)."""
    profile = load_profile(args.profile)
    device = device_of(args)
    check_dtype(args)
    files = gather_images(args.images)
    check_readable(files)
    if args.support is not None:
        normal_images(args.support, "--support")
    if args.calibration is not None:
        normal_images(args.calibration, "--calibration")
    progress = not args.no_progress
    diagnoser = Diagnoser(profile, args.checkpoint, device=device, dtype=args.dtype, progress=progress)
    diagnoser.set_support(args.support, args.calibration)
    summary = diagnoser.run(files, args.out, category=args.category, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, progress=progress,
                            warn=lambda line: print(f"samllava diagnose: {line}", file=sys.stderr))
    for row in summary:
        print(report_line(row))
    print(f"written: {args.out}/<image>/{{mask.png,overlay.png,report.json}} and {args.out}/summary.csv")
    return 0
