"""``samllava`` command line: evaluate, diagnose, reproduce, fetch-weights, fetch-data, make-data, bench."""
from __future__ import annotations

import argparse
import sys


def _key_value(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--data-root expects NAME=DIR, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds expects comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samllava", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("evaluate", help="image/pixel AUROC, AUPRO, F1-max (and description accuracy) on an MVTec-layout root")
    e.add_argument("--profile", default=None)
    e.add_argument("--data", required=True, help="data set root: one folder per category in the MVTec layout (or VisA)")
    e.add_argument("--shots", type=int, default=0, help="K normal support images (0 = zero-shot)")
    e.add_argument("--seeds", default="0", help="comma-separated support seeds, e.g. 0,1,2,3,4")
    e.add_argument("--stage", choices=["coarse", "full"], default="coarse")
    e.add_argument("--categories", default=None, help="comma-separated subset of categories")
    e.add_argument("--image-size", type=int, default=None)
    e.add_argument("--checkpoint", default=None, help="trained SamLlava checkpoint (stage full)")
    e.add_argument("--out", required=True, help="JSON file to write")

    d = sub.add_parser("diagnose", help="score, masks, yes/no answer and description for one image")
    d.add_argument("image")
    d.add_argument("--category", default=None, help="category name (default: a generic object)")
    d.add_argument("--support", default=None, help="folder of normal images for the few-shot path")
    d.add_argument("--profile", default=None)
    d.add_argument("--checkpoint", default=None, help="trained SamLlava checkpoint")
    d.add_argument("--out", required=True, help="output folder for mask.png, overlay.png, report.json")

    r = sub.add_parser("reproduce", help="run the numbered notebooks headless (papermill)")
    r.add_argument("--profile", default="offline")
    r.add_argument("--only", nargs="*", default=None, help="notebook numbers or names, e.g. 01 03")
    r.add_argument("--data-root", action="append", default=None, metavar="NAME=DIR")
    r.add_argument("--smoke", action="store_true", help="small budgets (seeds, steps): a quick check of every code path")

    f = sub.add_parser("fetch-weights", help="download the weights a profile needs (checksums verified, resumable)")
    f.add_argument("ids", nargs="*", help="weight ids (default: those of --profile)")
    f.add_argument("--profile", default=None)
    f.add_argument("--dir", default=None, help="download folder (default: $SAMLLAVA_WEIGHTS_DIR or ~/.cache/samllava)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")

    g = sub.add_parser("fetch-data", help="download MVTec-AD or VisA (checksums verified), unpack, lay out for --data-root")
    g.add_argument("dataset", choices=["mvtec", "visa"])
    g.add_argument("--out", required=True, help="data set root to write (then: reproduce --data-root NAME=OUT)")
    g.add_argument("--from-archive", default=None, metavar="FILE", help="use this released archive instead of downloading")
    g.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after unpacking")
    g.add_argument("--no-checksum", action="store_true", help="accept an archive whose SHA-256 is not the published one")
    g.add_argument("--quiet", action="store_true", help="no progress bars")

    m = sub.add_parser("make-data", help="write the synthetic defect data set in the MVTec layout")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--size", type=int, default=256)
    m.add_argument("--n-train", type=int, default=8)
    m.add_argument("--n-test", type=int, default=24)

    b = sub.add_parser("bench", help="complexity benchmark: parameters, latency, throughput, peak memory")
    b.add_argument("--profile", default=None)
    b.add_argument("--device", default="cpu")
    b.add_argument("--runs", type=int, default=20)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--out", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "reproduce":
        from .reproduce import ReproduceError, reproduce

        try:
            reproduce(profile=args.profile, only=args.only, data_roots=_key_value(args.data_root), smoke=args.smoke)
        except ReproduceError as err:
            print(f"samllava reproduce: {err}", file=sys.stderr)
            return 1
        return 0
    if args.command == "fetch-weights":
        from .weights import fetch_weights_cli

        return fetch_weights_cli(args)
    if args.command == "fetch-data":
        from .data.fetch import fetch_data_cli

        return fetch_data_cli(args)
    if args.command == "make-data":
        from .data import generate_synthetic

        root = generate_synthetic(args.out, n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed)
        print(root)
        return 0
    if args.command == "evaluate":
        from .evaluate import evaluate_cli

        return evaluate_cli(args)
    if args.command == "diagnose":
        from .diagnose import diagnose_cli

        return diagnose_cli(args)
    if args.command == "bench":
        from .bench import bench_cli

        return bench_cli(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
