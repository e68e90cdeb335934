"""``samllava bench``: the complexity benchmark of a profile, printed and optionally written as JSON."""
from __future__ import annotations

from samllava.cli.common import device_of
from samllava.core.config import load_profile
from samllava.core.provenance import provenance
from samllava.core.results import write_json
from samllava.evaluate.bench import BenchSettings, bench


def bench_cli(args) -> int:
    settings = BenchSettings(device=str(device_of(args)), runs=args.runs, warmup=args.warmup)
    profile = load_profile(args.profile)
    report = bench(profile, settings)
    if args.out:
        run = provenance(profile=profile, data="none (random inputs)", device=settings.device)
        write_json(args.out, report, run=run)
    print(report)
    return 0
