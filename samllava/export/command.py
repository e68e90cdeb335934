"""``samllava export``: load the model, fit the support folder, write the ONNX graphs and their JSON.

The arguments are :func:`samllava.export.parser.add_export_parser`'s; the work is
:func:`samllava.export.detector.export_detector`. Every image is opened before the model is loaded.
"""
from __future__ import annotations

from pathlib import Path

from samllava.core.config import load_profile
from samllava.diagnose.run import Diagnoser, normal_images
from samllava.export.detector import export_detector
from samllava.export.spec import model_files


def export_cli(args) -> int:
    """Export the detection part of ``args.profile``'s model (``args.checkpoint``) for ``args.support``."""
    if Path(args.out).suffix != ".onnx":
        raise ValueError(f"--out {args.out}: name the detection graph's file, ending in .onnx")
    profile = load_profile(args.profile)
    normal_images(args.support, "--support")
    if args.calibration is not None:
        normal_images(args.calibration, "--calibration")
    diagnoser = Diagnoser(profile, args.checkpoint, device="cpu", progress=not args.no_progress)
    diagnoser.set_support(args.support, args.calibration)
    record = export_detector(diagnoser.model, args.out, category=args.category, cap=args.max_patches or None,
                             support=str(args.support), checkpoint=diagnoser.checkpoint)
    files = model_files(args.out)
    sizes = ", ".join(f"{f} ({f.stat().st_size / 2**20:.1f} MiB)" for f in (files["detect"], files["fine"]))
    support = record["support"]
    print(f"written: {sizes} and {files['json']}")
    print(f"support: {support['images']} normal image(s), memory {support['memory']} of {support['patches']} "
          f"patches per level{' (coreset)' if support['coreset'] else ''}; verdict: {record['verdict']['text']}")
    print(f"run it without torch: python -m samllava.export.runner {files['detect']} IMAGES --out OUT")
    return 0
