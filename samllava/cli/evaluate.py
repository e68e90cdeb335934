"""``samllava evaluate``: the metrics of the coarse stage or of the whole trained model, as JSON.

Under ``torchrun`` every rank scores its share of the images (:func:`samllava.evaluate.harness.evaluate`);
rank 0 adds the description accuracy and writes the report."""
from __future__ import annotations

import numpy as np

from samllava.cli.checks import UsageError
from samllava.cli.common import check_dtype, data_of, device_of, in_process_group
from samllava.core import distributed
from samllava.core.config import load_profile
from samllava.core.provenance import provenance
from samllava.core.results import write_json
from samllava.evaluate.answers import description_eval
from samllava.evaluate.harness import CoarseMethod, FullMethod, evaluate, results_json, results_table
from samllava.model.checkpoint import load_model
from samllava.train.default_model import default_checkpoint


def evaluate_cli(args) -> int:
    """The data set and every option are checked before a model is built."""
    device = device_of(args)
    check_dtype(args)
    data = data_of("--data", args.data)
    if args.categories:
        wanted = [c.strip() for c in args.categories.split(",") if c.strip()]
        unknown = sorted(set(wanted) - set(data))
        if unknown:
            raise UsageError(f"--categories {args.categories}: {unknown} not in {args.data} (it has {sorted(data)})")
        data = {k: data[k] for k in wanted}
    if args.stage == "full" and args.checkpoint is None and distributed.world()[1] > 1:
        raise UsageError("--stage full under torchrun needs --checkpoint (or the default model built first: "
                         f"samllava train --profile {load_profile(args.profile).name})")
    return in_process_group(lambda a, dev: _evaluate(a, dev, data), args, device)


def _evaluate(args, device, data) -> int:
    profile = load_profile(args.profile)
    size = args.image_size or profile.data.image_size
    seeds = tuple(args.seeds)
    if args.stage == "coarse":
        checkpoint, method = None, CoarseMethod(profile, device=device)
    else:
        checkpoint = args.checkpoint or str(default_checkpoint(profile, progress=True, device=device))
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
