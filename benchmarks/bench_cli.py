"""Benchmark: how fast the command line answers, each call a new process, as a user types it.

    python benchmarks/bench_cli.py [--profile offline] [--runs 3] [--out results/bench_cli.json]

Targets (2 CPU cores): ``samllava --help`` and every ``samllava CMD --help`` <= 1 s; ``samllava diagnose
one.png --support DIR --out OUT`` <= 10 s end to end with the default model and the caches present. The
first diagnose call builds what a first use builds (the default model when missing, the support's memory,
the converted language model) and is not timed; the calls after it are. The images are a synthetic
category generated into a scratch folder (4 normal images; a defective and a normal test image, each
timed). Wall-clock times of this machine, with its CPU model, core count and load average beside them:
not comparable across machines.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from samllava.cli import COMMANDS  # noqa: E402  (light: the parsers only)
from samllava.core.config import load_profile  # noqa: E402
from samllava.core.provenance import cpu_model, provenance  # noqa: E402
from samllava.core.results import write_json  # noqa: E402
from samllava.data import generate_synthetic  # noqa: E402

TARGETS = {"help_s": 1.0, "diagnose_one_image_s": 10.0}


def samllava_command() -> list[str]:
    """The installed ``samllava`` script beside this interpreter, else ``python -m samllava``."""
    script = Path(sys.executable).with_name("samllava")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "samllava"]


def timed(cmd: list[str]) -> float:
    """Seconds ``cmd`` takes in a new process; a failure stops the benchmark with its output."""
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return took


def bench_help(runs: int) -> dict[str, dict]:
    """``samllava --help`` and ``samllava CMD --help``: every run's seconds and their median."""
    out = {}
    for name in ["", *COMMANDS]:
        cmd = [*samllava_command(), *([name] if name else []), "--help"]
        times = [timed(cmd) for _ in range(runs)]
        out[" ".join(["samllava", name, "--help"]).replace("  ", " ")] = {
            "seconds": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3)}
    return out


def bench_diagnose(profile: str, runs: int, scratch: Path, checkpoint: str | None = None) -> dict:
    """One image against 4 normal images, a defective one and a normal one (its answer is shorter): per image
    the first call (untimed: builds caches), then ``runs`` timed calls.
    ``checkpoint``: a trained model passed as ``--checkpoint`` (None: the profile's default model)."""
    root = generate_synthetic(scratch / "data", categories=["fabric"], n_train=4, n_test=2, size=256, seed=0)
    support = root / "fabric" / "train" / "good"
    out = {}
    for kind in ("defective", "normal"):
        one = next(f for f in sorted((root / "fabric" / "test").rglob("*.png")) if (f.parent.name == "good")
                   == (kind == "normal"))
        cmd = [*samllava_command(), "diagnose", str(one), "--support", str(support), "--profile", profile,
               "--out", str(scratch / "out"), "--no-progress", *(["--checkpoint", checkpoint] if checkpoint else [])]
        first = timed(cmd)
        times = [timed(cmd) for _ in range(runs)]
        out[kind] = {"command": "samllava diagnose one.png --support DIR (4 images) --out OUT --no-progress"
                                + (" --checkpoint RUN" if checkpoint else ""),
                     "image": f"{one.parent.name}/{one.name}", "model": checkpoint or "the profile's default model",
                     "first_call_s": round(first, 2),
                     "first_call": "builds the caches (the model when missing): not counted",
                     "seconds": [round(t, 2) for t in times], "median_s": round(statistics.median(times), 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="offline", help="profile of the diagnose run (default offline)")
    p.add_argument("--runs", type=int, default=3, help="timed calls of each command (default 3)")
    p.add_argument("--out", default=str(REPO / "results" / "bench_cli.json"), help="JSON report to write")
    p.add_argument("--checkpoint", default=None,
                   help="time `diagnose --checkpoint PATH` (default: the profile's default model, trained by the "
                        "first, untimed call when missing)")
    args = p.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="samllava-bench-cli-"))
    load = os.getloadavg()
    try:
        helps = bench_help(args.runs)
        diagnose = bench_diagnose(args.profile, args.runs, scratch, args.checkpoint)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    slowest = max(helps.items(), key=lambda kv: kv[1]["median_s"])
    report = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "targets": TARGETS,
        "help": helps,
        "help_slowest": {"command": slowest[0], "median_s": slowest[1]["median_s"]},
        "diagnose_one_image": diagnose,
        "met": {"help": slowest[1]["median_s"] <= TARGETS["help_s"],
                "diagnose_one_image": all(d["median_s"] <= TARGETS["diagnose_one_image_s"] for d in diagnose.values())},
    }
    run = provenance(profile=load_profile(args.profile), data="synthetic fabric, seed 0: 4 normal, 2 test images",
                     device="cpu")
    write_json(args.out, report, run=run)
    print(f"--help: slowest {slowest[0]} {slowest[1]['median_s']:.2f} s (target {TARGETS['help_s']} s); "
          + "".join(f"diagnose one {kind} image: median {d['median_s']:.2f} s of {d['seconds']}; "
                    for kind, d in diagnose.items())
          + f"(target {TARGETS['diagnose_one_image_s']} s); {report['machine']['cpu']}, "
            f"{report['machine']['cores']} cores -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
