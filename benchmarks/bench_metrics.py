"""Benchmark: streaming-histogram Pixel-AUC against scikit-learn's exact ``roc_auc_score``.

    python benchmarks/bench_metrics.py [--pixels 1e8] [--out results/bench_metrics.json] [--skip-sklearn]

A data set of ``--pixels`` pixels (1000 x 1000 float32 maps, one rectangular defect per image
scoring +2 on standard-normal noise, bool masks) is generated, seeded and vectorised, in a fresh
subprocess per method, so that each method's peak resident memory (``ru_maxrss``, data included)
is measured apart. Reported per method: wall time of the metric call alone, peak memory, the
value; for the histogram also its stated bound and the absolute error against sklearn.
Targets: >= 20x faster than sklearn, <= 1.5 GB peak, abs error <= 1e-4.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"speedup_min": 20.0, "peak_mb_max": 1536.0, "abs_error_max": 1e-4}


def make_data(pixels: int, seed: int, side: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(N, side, side)`` float32 maps and bool masks, ``N * side**2 ~= pixels``."""
    side = min(side, max(1, int(np.sqrt(pixels))))
    n = max(1, round(pixels / side**2))
    rng = np.random.default_rng(seed)
    maps = rng.standard_normal((n, side, side), dtype=np.float32)
    h, w = rng.integers(side // 20 + 1, side // 5 + 2, size=(2, n))  # defect sides: 5-20 % of the image
    y0, x0 = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
    ax = np.arange(side)
    in_y = (ax >= y0[:, None]) & (ax < (y0 + h)[:, None])  # (n, side)
    in_x = (ax >= x0[:, None]) & (ax < (x0 + w)[:, None])
    masks = in_y[:, :, None] & in_x[:, None, :]  # (n, side, side)
    np.add(maps, 2.0, out=maps, where=masks)  # in place: no second 400 MB array
    return maps, masks


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(method: str, pixels: int, seed: int) -> dict[str, Any]:
    """Run one method on freshly generated data in this (fresh) process."""
    sys.path.insert(0, str(REPO))
    from samllava import metrics

    maps, masks = make_data(pixels, seed)
    out: dict[str, Any] = {"method": method, "pixels": int(maps.size), "images": int(maps.shape[0]),
                           "peak_mb_after_data": _peak_mb()}
    t0 = time.perf_counter()
    if method == "histogram":
        out["value"], out["bound"] = metrics.pixel_auroc_with_bound(maps, masks)
    elif method == "aupro":
        out["value"], out["bound"] = metrics.aupro_with_bound(maps, masks)
    elif method == "sklearn":
        from sklearn.metrics import roc_auc_score

        out["value"] = float(roc_auc_score(masks.ravel(), maps.ravel()))
    else:
        raise ValueError(f"unknown method {method!r}")
    out["seconds"] = time.perf_counter() - t0
    out["peak_mb"] = _peak_mb()
    return out


def run_method(method: str, pixels: int, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", method, "--pixels", str(pixels), "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} worker failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=float, default=1e8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_metrics.json")
    parser.add_argument("--skip-sklearn", action="store_true", help="time the histogram methods only")
    parser.add_argument("--worker", choices=["histogram", "aupro", "sklearn"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pixels = int(args.pixels)
    if args.worker:
        print(json.dumps(worker(args.worker, pixels, args.seed)))
        return {}

    methods = ["histogram", "aupro"] + ([] if args.skip_sklearn else ["sklearn"])
    runs = {}
    for m in methods:
        runs[m] = run_method(m, pixels, args.seed)
        print(f"{m:>9}: {runs[m]['seconds']:7.2f} s  peak {runs[m]['peak_mb']:7.0f} MB  "
              f"value {runs[m]['value']:.8f}", flush=True)
    hist = runs["histogram"]
    report: dict[str, Any] = {
        "benchmark": "pixel AUROC: streaming histogram (samllava.metrics) vs sklearn roc_auc_score",
        "pixels": hist["pixels"], "images": hist["images"], "seed": args.seed,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "runs": runs, "targets": TARGETS,
    }
    checks = {"peak_mb_ok": hist["peak_mb"] <= TARGETS["peak_mb_max"]}
    if "sklearn" in runs:
        sk = runs["sklearn"]
        report["abs_error"] = abs(hist["value"] - sk["value"])
        report["error_within_bound"] = report["abs_error"] <= hist["bound"] + 1e-12
        report["speedup"] = sk["seconds"] / hist["seconds"]
        checks["speedup_ok"] = report["speedup"] >= TARGETS["speedup_min"]
        checks["abs_error_ok"] = report["abs_error"] <= TARGETS["abs_error_max"]
        print(f"abs error {report['abs_error']:.2e} (bound {hist['bound']:.2e}), speedup {report['speedup']:.1f}x")
    report["checks"] = checks
    sys.path.insert(0, str(REPO))
    from samllava.core.provenance import provenance
    from samllava.core.results import write_json

    run = provenance(data=f"generated: {hist['pixels']} pixels in {hist['images']} maps", seeds={"data": args.seed})
    print(f"wrote {write_json(args.out, report, run=run)}; checks: {checks}")
    return report


if __name__ == "__main__":
    main()
