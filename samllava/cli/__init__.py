"""``samllava`` command line: evaluate, diagnose, train, reproduce, fetch-weights, fetch-data, make-data, bench.

Every argument parser of the package lives here; the commands are in :mod:`samllava.cli.commands` and
:mod:`samllava.cli.fetch` (``python -m samllava train`` is ``samllava train``). A command that fails
on bad input prints one line, ``samllava <command>: <what is wrong>``, and exits with status 2;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys

from samllava.assets import download, weights
from samllava.train.default_model import MissingModelError
from samllava.notebook.runner import ReproduceError
from samllava.cli.commands import bench_cli, diagnose_cli, evaluate_cli, make_data_cli, reproduce_cli, train_cli
from samllava.cli.fetch import fetch_data_cli, fetch_weights_cli

COMMANDS = {"evaluate": evaluate_cli, "diagnose": diagnose_cli, "train": train_cli, "reproduce": reproduce_cli,
            "fetch-weights": fetch_weights_cli, "fetch-data": fetch_data_cli, "make-data": make_data_cli,
            "bench": bench_cli}
# What a person can fix from the message alone: printed as one line, not a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError,
               weights.MissingWeightsError, download.DownloadError, MissingModelError, ReproduceError)


def _add_device(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` (:mod:`samllava.core.device`)."""
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N or auto (default: $SAMLLAVA_DEVICE, else cuda when available, else cpu)")
    p.add_argument("--dtype", default=None,
                   help="weights of the frozen SAM encoder and LLaVA, e.g. float32 (default: the profile's on a GPU, "
                        "float32 on the CPU)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samllava", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_evaluate_parser, _diagnose_parser, _train_parser, _reproduce_parser, _fetch_weights_parser,
                _fetch_data_parser, _make_data_parser, _bench_parser):
        add(sub)
    return p


def _evaluate_parser(sub) -> None:
    e = sub.add_parser(
        "evaluate", help="image/pixel AUROC, AUPRO, F1-max (and description accuracy) on an MVTec-layout root"
    )
    e.add_argument("--profile", default=None)
    e.add_argument("--data", required=True, help="data set root: one folder per category in the MVTec layout (or VisA)")
    e.add_argument("--shots", type=int, default=0, help="K normal support images (0 = zero-shot)")
    e.add_argument("--seeds", default="0", help="comma-separated support seeds, e.g. 0,1,2,3,4")
    e.add_argument("--stage", choices=["coarse", "full"], default="coarse")
    e.add_argument("--categories", default=None, help="comma-separated subset of categories")
    e.add_argument("--image-size", type=int, default=None)
    e.add_argument("--checkpoint", default=None, help="trained SamLlava checkpoint (stage full; default: the "
                                                      "profile's default model, trained on first use)")
    e.add_argument("--out", required=True, help="JSON file to write")
    e.add_argument("--batch-size", type=int, default=None,
                   help="images per batch on a GPU (default: gpu.encode_batch, else as many as fit in free memory)")
    _add_device(e)


def _diagnose_parser(sub) -> None:
    d = sub.add_parser("diagnose", help="verdict, masks, yes/no answer and description for images and folders")
    d.add_argument("images", nargs="+", metavar="IMAGE", help="image files and folders of images (recursive)")
    d.add_argument("--category", default=None, help="category name (default: a generic object)")
    d.add_argument("--support", default=None, help="folder of normal images: the few-shot memory and the verdict's "
                                                     "thresholds (cached by content)")
    d.add_argument("--calibration", default=None, metavar="DIR",
                   help="folder of other normal images (not in --support) that calibrate the verdict: with a few "
                        "dozen the false-positive rate holds closely (default: the --support images, each left "
                        "out in turn)")
    d.add_argument("--profile", default=None)
    d.add_argument("--checkpoint", default=None,
                   help="trained SamLlava checkpoint (default: the profile's default model, trained on first use)")
    d.add_argument("--batch-size", type=int, default=32,
                   help="images per batch (on a GPU: at most, as many as fit)")
    d.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("--out", required=True, help="output folder: <image>/mask.png, overlay.png, report.json, "
                                                "summary.csv")
    _add_device(d)


def _reproduce_parser(sub) -> None:
    r = sub.add_parser("reproduce", help="run the numbered notebooks headless (papermill)")
    r.add_argument("--profile", default="offline")
    r.add_argument("--only", nargs="*", default=None, help="notebook numbers or names, e.g. 01 03")
    r.add_argument("--data-root", action="append", default=None, metavar="NAME=DIR")
    r.add_argument(
        "--smoke", action="store_true", help="small budgets (seeds, steps): a quick check of every code path"
    )
    r.add_argument("--device", default=None,
                   help="every notebook's device parameter: cpu, cuda, cuda:N or auto (default: cuda when available)")


def _fetch_weights_parser(sub) -> None:
    f = sub.add_parser("fetch-weights", help="download the weights a profile needs (checksums verified, resumable)")
    f.add_argument("ids", nargs="*", help="weight ids (default: those of --profile)")
    f.add_argument("--profile", default=None)
    f.add_argument("--dir", default=None, help="download folder (default: $SAMLLAVA_WEIGHTS_DIR or ~/.cache/samllava)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")


def _fetch_data_parser(sub) -> None:
    g = sub.add_parser("fetch-data",
                       help="download MVTec-AD or VisA (checksums verified), unpack, lay out for --data-root")
    g.add_argument("dataset", choices=["mvtec", "visa"])
    g.add_argument("--out", required=True, help="data set root to write (then: reproduce --data-root NAME=OUT)")
    g.add_argument("--from-archive", default=None, metavar="FILE",
                   help="use this released archive instead of downloading")
    g.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after unpacking")
    g.add_argument("--no-checksum", action="store_true",
                   help="accept an archive whose SHA-256 is not the published one")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _make_data_parser(sub) -> None:
    m = sub.add_parser("make-data", help="write a generated defect data set in the MVTec layout")
    m.add_argument("--kind", choices=["synthetic", "realtex"], default="synthetic",
                   help="synthetic: procedural surfaces and defects; realtex: real texture photographs with subtle "
                        "painted defects (the harder development set)")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--size", type=int, default=256)
    m.add_argument("--n-train", type=int, default=8)
    m.add_argument("--n-test", type=int, default=24)


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="complexity benchmark: parameters, latency, throughput, peak memory")
    b.add_argument("--profile", default=None)
    b.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    b.add_argument("--runs", type=int, default=20)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--out", default=None)


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="train the trainable parts end to end (torchrun: several processes); without "
                                     "--data and --out: the profile's default model, in the weights cache")
    t.add_argument("--profile", default=None)
    t.add_argument("--data", default=None, help="MVTec-layout root: test images with labels (masks where present) "
                                                "train the model; train/good gives the support (default: the "
                                                "profile's synthetic training set)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--shots", type=int, default=None, help="support images per category (default 4)")
    t.add_argument("--out", default=None, help="output folder (default: the profile's default model)")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--micro-batch", type=int, default=None,
                   help="images per forward/backward on a GPU; gradients accumulate to train.batch_size "
                        "(default: gpu.train_micro_batch, else as many as fit in free memory)")
    _add_device(t)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"samllava {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
