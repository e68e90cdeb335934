"""The ``samllava`` commands that run the method: evaluate, diagnose, train, reproduce, make-data, bench."""
from __future__ import annotations

import sys

import numpy as np
import torch

from samllava.core import distributed
from samllava.evaluate.answers import description_eval
from samllava.evaluate.bench import BenchSettings, bench
from samllava.model.checkpoint import load_model
from samllava.core.config import Profile, load_profile
from samllava.data import generate_realtex, generate_synthetic, load_dataset
from samllava.train.default_model import DEFAULT_SHOTS, default_checkpoint, train_default, train_on_data
from samllava.core.device import resolve_device
from samllava.diagnose.files import check_readable, gather_images
from samllava.diagnose.report import report_line
from samllava.diagnose.run import Diagnoser, no_signal_message
from samllava.evaluate.harness import CoarseMethod, FullMethod, evaluate, results_json, results_table
from samllava.notebook.runner import reproduce
from samllava.core.provenance import provenance
from samllava.core.results import write_json
from samllava.train.end_to_end import world


def _key_value(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--data-root expects NAME=DIR, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, got {text!r}") from None


def require_signal(profile: Profile, normals: bool, what: str) -> None:
    """Refuse a request the profile cannot answer: without normal images only the zero-shot CLIP term
    judges, and random CLIP weights carry no signal (the tiny and offline profiles)."""
    message = None if normals else no_signal_message(profile, what)
    if message:
        raise ValueError(message)


def _checkpoint(profile: Profile, given: str | None, progress: bool, device=None) -> str:
    """The checkpoint a command uses: ``--checkpoint``, else the profile's default model (trained on first use)."""
    return given if given is not None else str(default_checkpoint(profile, progress=progress, device=device))


def _in_process_group(run, args) -> int:
    """``run(args, device)`` on ``--device``, inside torchrun's process group when started under it."""
    device = resolve_device(args.device)
    started = distributed.init(device)
    try:
        return run(args, device)
    finally:
        if started:
            distributed.shutdown()


def evaluate_cli(args) -> int:
    """``samllava evaluate``: the metrics of the coarse stage or of the whole trained model, as JSON.

    Under ``torchrun`` every rank scores its share of the images (:func:`samllava.evaluate.harness.evaluate`);
    rank 0 adds the description accuracy and writes the report."""
    return _in_process_group(_evaluate, args)


def _evaluate(args, device) -> int:
    profile = load_profile(args.profile)
    require_signal(profile, args.shots > 0, "evaluate")
    data = load_dataset(args.data)
    if args.categories:
        wanted = args.categories.split(",")
        unknown = sorted(set(wanted) - set(data))
        if unknown:
            raise ValueError(f"--categories {unknown} not in {args.data} (has {sorted(data)})")
        data = {k: data[k] for k in wanted}
    size = args.image_size or profile.data.image_size
    seeds = tuple(_seeds(args.seeds))
    if args.stage == "coarse":
        checkpoint, method = None, CoarseMethod(profile, device=device)
    else:
        if args.checkpoint is None and distributed.world()[1] > 1:
            raise ValueError("--stage full under torchrun needs --checkpoint (or the default model built first: "
                             f"samllava train --profile {profile.name})")
        checkpoint = _checkpoint(profile, args.checkpoint, progress=True, device=device)
        method = FullMethod(profile, model=load_model(profile, checkpoint, device=device, dtype=args.dtype))
    results = evaluate(method, data, shots=args.shots, seeds=seeds, image_size=size, gpu_batch=args.batch_size)
    if distributed.world()[0] != 0:
        return 0
    header = {"profile": profile.name, "weights": profile.weights_label(), "data": str(args.data), "stage": args.stage,
              "shots": args.shots, "seeds": list(seeds), "image_size": size, "checkpoint": checkpoint,
              "terms": getattr(method, "last_terms", {}), "device": str(device), "processes": distributed.world()[1]}
    report = results_json(results, **header)
    if args.stage == "full":
        _add_description_accuracy(report, method.model, data, args.shots, seeds, size)
    write_json(args.out, report, run=provenance(profile=profile, data={"data": data}, seeds={"support": list(seeds)},
                                                device=device))
    print(results_table(results).to_string(index=False))
    if args.stage == "full":
        print(f"yes/no accuracy (mean over categories and seeds): {100 * report['mean']['description_accuracy']:.1f} %")
    return 0


def _add_description_accuracy(report: dict, model, data, shots: int, seeds: tuple[int, ...], size: int) -> None:
    """The yes/no rule of Table 5 on the generated answers, mean over seeds, into an evaluate report."""
    accs = {name: [] for name in data}
    for seed in seeds if shots > 0 else seeds[:1]:
        # the answers are most of a full evaluation's time: a progress bar per support seed, not minutes of silence
        table = description_eval(model, data, shots=shots, seed=seed, image_size=size, max_new_tokens=8,
                                 progress=True)[0]
        for row in table.itertuples():
            accs[row.category].append(row.accuracy / 100)
    for name, vals in accs.items():
        report["categories"][name]["summary"]["description_accuracy"] = float(np.mean(vals))
    report["mean"]["description_accuracy"] = float(np.mean([np.mean(v) for v in accs.values()]))


def diagnose_cli(args) -> int:
    """``samllava diagnose IMAGE [IMAGE|FOLDER ...]``: per image mask, overlay and report; a summary.csv."""
    profile = load_profile(args.profile)
    require_signal(profile, args.support is not None, "diagnose")
    if args.calibration is not None and args.support is None:
        raise ValueError(f"--calibration {args.calibration}: calibrates the verdict of a support set; give --support")
    files = gather_images(args.images)
    check_readable(files)
    diagnoser = Diagnoser(profile, args.checkpoint, device=resolve_device(args.device), dtype=args.dtype,
                          progress=not args.no_progress)
    diagnoser.set_support(args.support, args.calibration)
    summary = diagnoser.run(files, args.out, category=args.category, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
    for row in summary.to_dict("records"):
        print(report_line(row))
    print(f"written: {args.out}/<image>/{{mask.png,overlay.png,report.json}} and {args.out}/summary.csv")
    return 0


def train_cli(args) -> int:
    """``samllava train``: the profile's default model, or a model trained on ``--data`` into ``--out``
    (``torchrun`` for several processes: DistributedDataParallel, NCCL on GPUs and gloo on the CPU,
    :mod:`samllava.core.distributed`)."""
    return _in_process_group(_train, args)


def _train(args, device) -> int:
    profile = load_profile(args.profile)
    progress = not args.no_progress
    shots = DEFAULT_SHOTS if args.shots is None else args.shots
    if args.data is None and args.out is None and args.epochs is None and shots == DEFAULT_SHOTS:
        out = train_default(profile, progress=progress, device=device, micro_batch=args.micro_batch)
        print(f"default model of profile {profile.name!r}: {out}")
        return 0
    if args.out is None:
        raise ValueError("--out is needed with --data, --epochs or --shots (the default model is trained by "
                         "`samllava train --profile P` alone)")
    model, history = train_on_data(profile, args.data, args.out, shots=shots, epochs=args.epochs, progress=progress,
                                   log=lambda m: print(m, file=sys.stderr), device=device, dtype=args.dtype,
                                   micro_batch=args.micro_batch)
    rank, size = world()
    if size > 1:
        # report a digest of the weights so callers can check that all ranks agree
        digest = torch.stack([p.detach().double().sum() for p in model.trainable_parameters()]).sum()
        sys.stdout.write(f"rank {rank} world {size} steps {len(history)} digest {digest.item():.10e}\n")  # one write:
        sys.stdout.flush()  # the ranks share the pipe, and print() writes the newline apart
    return 0


def reproduce_cli(args) -> int:
    """``samllava reproduce``: every notebook headless (papermill)."""
    reproduce(profile=args.profile, only=args.only, data_roots=_key_value(args.data_root), smoke=args.smoke,
              device=args.device)
    return 0


def make_data_cli(args) -> int:
    """``samllava make-data``: a generated data set in the MVTec layout."""
    make = generate_realtex if args.kind == "realtex" else generate_synthetic
    print(make(args.out, n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed))
    return 0


def bench_cli(args) -> int:
    """``samllava bench``: the complexity benchmark of a profile, printed and optionally written as JSON."""
    settings = BenchSettings(device=str(resolve_device(args.device)), runs=args.runs, warmup=args.warmup)
    profile = load_profile(args.profile)
    report = bench(profile, settings)
    if args.out:
        run = provenance(profile=profile, data="none (random inputs)", device=settings.device)
        write_json(args.out, report, run=run)
    print(report)
    return 0
