"""``samllava`` command line: evaluate, diagnose, train, reproduce, fetch-weights, fetch-data, make-data, bench.

Every argument parser of the package lives here, with the ``*_cli`` function that runs each
subcommand; ``python -m samllava.train`` is ``samllava train``.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import json
from pathlib import Path

from . import download, weights
from .data import fetch as data_fetch
from .answers import description_eval
from .bench import BenchSettings, bench
from .checkpoint import load_model
from .config import load_profile
from .data import generate_realtex, generate_synthetic, load_dataset, load_image
from .diagnose import load_support, write_outputs
from .evaluate import CoarseMethod, FullMethod, evaluate, results_json, results_table
from .examples import prepare
from .model import build_model
from .paths import ensure_synthetic
from .reproduce import ReproduceError, reproduce
from .provenance import provenance
from .results import write_json
from .train import train, world


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
    e.add_argument("--checkpoint", default=None, help="trained SamLlava checkpoint (stage full)")
    e.add_argument("--out", required=True, help="JSON file to write")


def _diagnose_parser(sub) -> None:
    d = sub.add_parser("diagnose", help="score, masks, yes/no answer and description for one image")
    d.add_argument("image")
    d.add_argument("--category", default=None, help="category name (default: a generic object)")
    d.add_argument("--support", default=None, help="folder of normal images for the few-shot path")
    d.add_argument("--profile", default=None)
    d.add_argument("--checkpoint", default=None, help="trained SamLlava checkpoint")
    d.add_argument("--out", required=True, help="output folder for mask.png, overlay.png, report.json")


def _reproduce_parser(sub) -> None:
    r = sub.add_parser("reproduce", help="run the numbered notebooks headless (papermill)")
    r.add_argument("--profile", default="offline")
    r.add_argument("--only", nargs="*", default=None, help="notebook numbers or names, e.g. 01 03")
    r.add_argument("--data-root", action="append", default=None, metavar="NAME=DIR")
    r.add_argument(
        "--smoke", action="store_true", help="small budgets (seeds, steps): a quick check of every code path"
    )


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
    b.add_argument("--device", default="cpu")
    b.add_argument("--runs", type=int, default=20)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--out", default=None)


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="train the trainable parts end to end (torchrun: several processes)")
    t.add_argument("--profile", default=None)
    t.add_argument("--data", default=None, help="MVTec-layout root (default: the profile's synthetic training set)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--shots", type=int, default=0)
    t.add_argument("--out", required=True)
    t.add_argument("--no-progress", action="store_true")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "reproduce":
        try:
            reproduce(profile=args.profile, only=args.only, data_roots=_key_value(args.data_root), smoke=args.smoke)
        except ReproduceError as err:
            print(f"samllava reproduce: {err}", file=sys.stderr)
            return 1
        return 0
    if args.command == "fetch-weights":
        return fetch_weights_cli(args)
    if args.command == "fetch-data":
        return fetch_data_cli(args)
    if args.command == "make-data":
        make = generate_realtex if args.kind == "realtex" else generate_synthetic
        root = make(args.out, n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed)
        print(root)
        return 0
    commands = {"evaluate": evaluate_cli, "diagnose": diagnose_cli, "bench": bench_cli, "train": train_cli}
    return commands[args.command](args) if args.command in commands else 2


def evaluate_cli(args) -> int:
    """``samllava evaluate``: the metrics of the coarse stage or of the whole trained model, as JSON."""
    profile = load_profile(args.profile)
    data = load_dataset(args.data)
    if args.categories:
        wanted = args.categories.split(",")
        unknown = sorted(set(wanted) - set(data))
        if unknown:
            raise ValueError(f"--categories {unknown} not in {args.data} (has {sorted(data)})")
        data = {k: data[k] for k in wanted}
    size = args.image_size or profile.data.image_size
    seeds = tuple(_seeds(args.seeds))
    method = CoarseMethod(profile) if args.stage == "coarse" else FullMethod(profile, checkpoint=args.checkpoint)
    results = evaluate(method, data, shots=args.shots, seeds=seeds, image_size=size)
    header = {"profile": profile.name, "weights": profile.weights_label(), "data": str(args.data), "stage": args.stage,
              "shots": args.shots, "seeds": list(seeds), "image_size": size,
              "terms": getattr(method, "last_terms", {})}
    report = results_json(results, **header)
    if args.stage == "full":
        _add_description_accuracy(report, method.model, data, args.shots, seeds, size)
    write_json(args.out, report, run=provenance(profile=profile, data={"data": data}, seeds={"support": list(seeds)}))
    print(results_table(results).to_string(index=False))
    return 0


def _add_description_accuracy(report: dict, model, data, shots: int, seeds: tuple[int, ...], size: int) -> None:
    """The yes/no rule of Table 5 on the generated answers, mean over seeds, into an evaluate report."""
    accs = {name: [] for name in data}
    for seed in seeds if shots > 0 else seeds[:1]:
        table = description_eval(model, data, shots=shots, seed=seed, image_size=size, max_new_tokens=8)[0]
        for row in table.itertuples():
            accs[row.category].append(row.accuracy / 100)
    for name, vals in accs.items():
        report["categories"][name]["summary"]["description_accuracy"] = float(np.mean(vals))
    report["mean"]["description_accuracy"] = float(np.mean([np.mean(v) for v in accs.values()]))


def diagnose_cli(args) -> int:
    """``samllava diagnose IMAGE``: one image in, mask PNG, overlay PNG and a JSON report out."""
    profile = load_profile(args.profile)
    size = profile.data.image_size
    image = load_image(args.image, size)
    support = load_support(args.support, size) if args.support else None
    model = load_model(profile, args.checkpoint)
    diagnosis = model.diagnose(image[None], args.category, support)[0]
    paths = write_outputs(diagnosis, image, args.out)
    report = diagnosis.report()
    report["profile"], report["weights"], report["checkpoint"] = profile.name, profile.weights_label(), args.checkpoint
    if args.checkpoint is None:
        report["note"] = "untrained SAM side, SASA and LoRA: train first (samllava train) for meaningful answers"
    write_json(paths["report"], report)
    written = ", ".join(str(p) for p in paths.values())
    print(f"answer: {diagnosis.answer}\ndescription: {diagnosis.description}\nwritten: {written}")
    return 0


def bench_cli(args) -> int:
    """``samllava bench``: the complexity benchmark of a profile, printed and optionally written as JSON."""
    profile = load_profile(args.profile)
    report = bench(profile, BenchSettings(device=args.device, runs=args.runs, warmup=args.warmup))
    if args.out:
        write_json(args.out, report, run=provenance(profile=profile, data="none (random inputs)", device=args.device))
    print(report)
    return 0


def train_cli(args) -> int:
    """``samllava train``: train on the profile's synthetic data (``torchrun`` for several processes)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    profile = load_profile(args.profile)
    model = build_model(profile)
    data = load_dataset(args.data or ensure_synthetic(profile, seed=1))
    examples = prepare(model, data, profile.data.image_size, shots=args.shots, progress=not args.no_progress)
    history = train(model, examples, epochs=args.epochs, out_dir=args.out, progress=not args.no_progress)
    rank, size = world()
    if size > 1:
        # report a digest of the weights so callers can check that all ranks agree
        digest = torch.stack([p.detach().double().sum() for p in model.trainable_parameters()]).sum()
        print(f"rank {rank} world {size} steps {len(history)} digest {digest.item():.10e}", flush=True)
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())


def fetch_weights_cli(args) -> int:
    """``samllava fetch-weights [IDS] [--profile P] [--dir DIR]``: every file a profile needs.

    States the disk needed first, then prints ``<id>: <path>`` per file and, per failure, one line
    ``samllava fetch-weights: <id>: <what is wrong and what to do>`` on stderr. Exit status 2 when any
    file failed (the others are still fetched), 0 otherwise.
    """
    prog = "samllava fetch-weights"
    try:
        ids = args.ids or weights.profile_weight_ids(load_profile(args.profile))
        specs = [weights.spec(i) for i in ids]
    except (KeyError, FileNotFoundError, ValueError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    directory = Path(args.dir or weights.cache_dir()).expanduser()
    # a file the user already points at (environment variable) is not fetched again, unless --dir asks for a copy
    todo = [s for s in specs if args.dir or not os.environ.get(s.env)]
    need = sum(weights.pending_bytes(s, directory / s.filename) for s in todo)
    if need:
        print(f"{prog}: about {download.human_bytes(need)} to download into {directory} "
              f"({download.human_bytes(download.free_bytes(directory))} free)", file=sys.stderr)
        try:
            download.ensure_free_space(directory, need, "the download")
        except download.DownloadError as err:
            print(f"{prog}: disk: {err}", file=sys.stderr)
            return 2
    failed = 0
    for s in specs:
        try:
            if s in todo and (s.url or s.hf_repo):
                path = weights.fetch(s.id, directory, progress=not args.quiet)
            else:
                path = weights.resolve(s.id)
            print(f"{s.id}: {path}")
        except (download.DownloadError, weights.MissingWeightsError) as err:
            print(f"{prog}: {s.id}: {err}", file=sys.stderr)
            failed += 1
    if args.dir and directory != weights.cache_dir() and failed < len(specs):
        print(f"{prog}: the files are in {directory}: export {weights.CACHE_ENV}={directory} "
              "so that the profiles find them",
              file=sys.stderr)
    return 2 if failed else 0


def fetch_data_cli(args) -> int:
    """``samllava fetch-data mvtec|visa --out DIR [--from-archive FILE]``; exit status 2 on failure."""
    try:
        out = data_fetch.fetch_data(args.dataset, args.out, from_archive=args.from_archive,
                                    keep_archive=args.keep_archive, verify=not args.no_checksum,
                                    progress=not args.quiet,
                                    log=lambda m: print(f"samllava fetch-data: {m}", file=sys.stderr))
    except (data_fetch.DataFetchError, download.DownloadError, FileNotFoundError, ValueError) as err:
        print(f"samllava fetch-data: {args.dataset}: {err}", file=sys.stderr)
        return 2
    counts = json.loads((out / data_fetch.LAID_OUT_MARKER).read_text())["counts"]
    n_train, n_test = (sum(c[k] for c in counts.values()) for k in ("train", "test_good"))
    n_anomaly = sum(c["test_anomaly"] for c in counts.values())
    print(f"{args.dataset}: {out} ({len(counts)} categories; {n_train} train, {n_test} normal test, "
          f"{n_anomaly} anomalous test images): samllava reproduce --data-root {args.dataset}={out}")
    return 0
