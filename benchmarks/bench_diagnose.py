"""Benchmark: `samllava diagnose` on 2 CPU cores, the targets of issue #14.

    python benchmarks/bench_diagnose.py [--profile offline] [--out results/bench_diagnose.json]

Targets (offline profile, model loaded, 40-token answers): one image <= 3 s; a folder of 50 images
<= 1 s per image amortised; a 200-image support folder embedded in <= 20 s the first time and read from
the cache after; peak memory <= 3 GB whatever the support size.

Every phase runs in a fresh child process (``--phase``), so its peak resident memory (``ru_maxrss``)
is its own: loading the model, fitting a support of K = 4, 16, 64 and 200 images (first time, then from
the cache), diagnosing one image and a folder of 50. The default trained model must exist
(``samllava train --profile P``); the images are a synthetic data set generated into a scratch folder
(one category, 200 normal training images, 50 test images). Times are wall-clock on this machine, with
its CPU model, thread count and load average recorded beside them: they are not comparable across
machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGETS = {"one_image_s": 3.0, "per_image_folder_s": 1.0, "support_200_first_s": 20.0, "peak_gb": 3.0}
SUPPORT_SIZES = (4, 16, 64, 200)
FOLDER = 50


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def _model(profile_name: str):
    from samllava.model.checkpoint import load_model
    from samllava.core.config import load_profile
    from samllava.train.default_model import default_checkpoint

    profile = load_profile(profile_name)
    t0 = time.perf_counter()
    model = load_model(profile, default_checkpoint(profile, train_if_missing=False)).eval()
    return profile, model, time.perf_counter() - t0


def phase(name: str, profile_name: str, data: Path, k: int, cache: Path) -> dict:
    """One measurement in this process (a child): returns its numbers and its peak memory."""
    import torch

    from samllava.assets import weights
    from samllava.data.mvtec import list_images
    from samllava.diagnose.files import diagnose_files, gather_images
    from samllava.diagnose.run import fit_support, support_digest

    profile, model, load_s = _model(profile_name)
    size = profile.data.image_size
    out: dict = {"phase": name, "load_s": load_s, "threads": torch.get_num_threads()}
    cat = data / "fabric"
    if name == "support":
        folder = cache / f"support_{k}"
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for f in list_images(cat / "train" / "good")[:k]:
                (folder / f.name).symlink_to(f)
        label = model.coarse.calibrator.extractor.label
        cached = weights.cache_dir() / "support" / f"{support_digest(list_images(folder), size, label)}.pt"
        cached.unlink(missing_ok=True)  # the first time: embedded, not read
        t0 = time.perf_counter()
        fit_support(model, folder, size)
        out["first_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit_support(model, folder, size)  # the same content: read from the cache
        out["cached_s"] = time.perf_counter() - t0
        out["k"] = k
    else:
        fit_support(model, cache / "support_4", size)  # written by the support phase
        tests = gather_images([cat / "test"])  # every defect folder and good/
        files = [f for f in tests if f.parent.name != "good"][:1] if name == "one" else tests[:FOLDER]
        runs = []
        for _ in range(3 if name == "one" else 1):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                diagnose_files(model, files, tmp, category=None, size=size, max_new_tokens=40, progress=False)
                runs.append(time.perf_counter() - t0)
        out.update({"images": len(files), "runs_s": runs, "median_s": statistics.median(runs),
                    "per_image_s": statistics.median(runs) / len(files)})
    out["peak_gb"] = _peak_gb()
    return out


def run_child(args, name: str, data: Path, cache: Path, k: int = 4) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--profile", args.profile, "--data", str(data),
           "--cache", str(cache), "--k", str(k)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--out", default=None)
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.profile, Path(args.data), args.k, Path(args.cache))))
        return
    from samllava.core.config import load_profile
    from samllava.data import generate_synthetic
    from samllava.core.provenance import cpu_model, provenance
    from samllava.core.results import write_json

    profile = load_profile(args.profile)
    with tempfile.TemporaryDirectory(prefix="bench-diagnose-") as tmp:
        tmp = Path(tmp)
        data = generate_synthetic(tmp / "data", categories=["fabric"], n_train=max(SUPPORT_SIZES), n_test=FOLDER,
                                  size=profile.data.image_size, seed=7)
        cache = tmp / "folders"
        cache.mkdir()
        supports = [run_child(args, "support", data, cache, k) for k in SUPPORT_SIZES]
        one = run_child(args, "one", data, cache)
        folder = run_child(args, "folder", data, cache)
    peak = max(r["peak_gb"] for r in [*supports, one, folder])
    s200 = supports[-1]
    report = {
        "profile": args.profile, "cpu": cpu_model(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
        "targets": TARGETS,
        "measured": {"one_image_s": one["median_s"], "per_image_folder_s": folder["per_image_s"],
                     "support_200_first_s": s200["first_s"], "support_200_cached_s": s200["cached_s"],
                     "peak_gb": peak, "model_load_s": one["load_s"]},
        "supports": supports, "one": one, "folder": folder,
    }
    report["met"] = {k: report["measured"][k] <= v for k, v in TARGETS.items()}
    print(json.dumps(report["measured"], indent=1), json.dumps(report["met"]))
    if args.out:
        write_json(args.out, report, run=provenance(profile=profile, data="synthetic, generated (seed 7)"))


if __name__ == "__main__":
    main()
