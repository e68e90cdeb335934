"""Benchmark: the exported detector in onnxruntime against torch on this CPU (issue #38).

    python benchmarks/bench_export.py [--checkpoint RUN] [--out results/bench_export.json]

Offline profile, one synthetic category (seed 7: 200 normal training images, 32 test images, half of them
defective). For a support of K = 4 images and one of 200 (its memory capped at ``MEMORY_CAP`` patches per
level by the greedy coreset, :mod:`samllava.export.coreset`), and the 200 uncapped for comparison:

* the export's time and its size on disk (the two graphs and the JSON);
* images per second of the detection part at batch 1 and 8, images already in memory, 2 threads each:
  torch (``SamLlava.encode`` + ``SamLlava.fine``: decision map, score, verdict, M'_coarse, SAM's gated
  M_fine; no language model) and onnxruntime (``runner.Detector``: both graphs and the numpy steps between);
* against torch (whose memory is never capped): the largest relative score difference, the verdicts that
  agree, the smallest mask IoU, and the images each judges defective among the normal and defective ones.

The model is ``--checkpoint``, else the profile's default model when it was trained, else the untrained
model (recorded): the scores come from frozen parts, and the cost is the same. Times are wall-clock on this
machine (its CPU and load average are recorded), best of ``--repeats``; not comparable across machines.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from samllava.core.config import load_profile  # noqa: E402
from samllava.core.provenance import cpu_model, provenance  # noqa: E402
from samllava.core.results import write_json  # noqa: E402
from samllava.data import generate_synthetic, load_image  # noqa: E402
from samllava.data.mvtec import list_images  # noqa: E402
from samllava.diagnose.run import fit_support  # noqa: E402
from samllava.export.detector import export_detector  # noqa: E402
from samllava.export.runner import Detector  # noqa: E402
from samllava.export.spec import MEMORY_CAP, model_files  # noqa: E402
from samllava.model.checkpoint import load_model  # noqa: E402
from samllava.train.default_model import MissingModelError, default_checkpoint  # noqa: E402

THREADS = 2
BATCHES = (1, 8)
SHOTS = 4  # the small support; the large one is --normals images, exported capped and whole


@torch.no_grad()
def torch_detect(model, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detection part in torch: scores (B,), verdicts (B,), gated M_fine (B, S, S)."""
    enc = model.encode(images, None)
    fine = model.fine(enc)
    return enc.coarse.score.numpy(), enc.coarse.defective.numpy(), fine.mask.numpy()


def images_per_second(fn, images, batch: int, repeats: int) -> float:
    """``len(images)`` images in batches of ``batch``: the best of ``repeats`` passes (after one warm-up batch)."""
    fn(images[:batch])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            fn(images[i:i + batch])
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def agreement(want: tuple, got, labels: np.ndarray) -> dict:
    """The exported model's outputs ``got`` (a runner Detection) against torch's ``want``."""
    scores, defective, masks = want
    ious = [float((a & b).sum() / (a | b).sum()) if (a | b).any() else 1.0 for a, b in zip(masks, got.fine)]
    return {"score_max_relative_difference": float((np.abs(got.score - scores) / np.abs(scores)).max()),
            "score_median_relative_shift": float(np.median((got.score - scores) / np.abs(scores))),
            "verdicts_agree": int((got.defective == defective).sum()), "images": len(labels),
            "mask_iou_min": min(ious), "mask_iou_mean": float(np.mean(ious)),
            "flagged_torch": flagged(defective, labels), "flagged_onnx": flagged(got.defective, labels)}


def flagged(defective: np.ndarray, labels: np.ndarray) -> dict:
    """How many of the normal and of the defective test images are judged defective."""
    return {"normal": int(defective[labels == 0].sum()), "defective": int(defective[labels == 1].sum())}


def one_export(model, k: int, cap: int | None, images: torch.Tensor, labels: np.ndarray, want: tuple, out: Path,
               repeats: int) -> dict:
    """Export the fitted support of ``k`` images capped at ``cap`` and measure it (the module docstring)."""
    start = time.perf_counter()
    record = export_detector(model, out, cap=cap, support=f"{k} synthetic normal images")
    export_s = time.perf_counter() - start
    detector = Detector(out, threads=THREADS)
    arrays = images.numpy()
    return {"support_images": k, "cap": cap, "memory_patches": record["support"]["memory"],
            "support_patches": record["support"]["patches"], "coreset": record["support"]["coreset"],
            "rule": record["verdict"]["rule"], "export_s": export_s,
            "size_mb": {name: f.stat().st_size / 1e6 for name, f in model_files(out).items()},
            "onnxruntime_images_per_second": {f"batch {b}": images_per_second(detector, arrays, b, repeats)
                                              for b in BATCHES},
            "against_torch": agreement(want, detector(arrays), labels)}


def one_support(model, folder: Path, caps: list[int | None], images: torch.Tensor, labels: np.ndarray, out: Path,
                repeats: int) -> list[dict]:
    """Fit ``folder``'s support, time torch on it once (its memory is never capped), then each export."""
    k = fit_support(model, folder, images.shape[-1], cache=False)
    speed = {f"batch {b}": images_per_second(lambda x: torch_detect(model, x), images, b, repeats) for b in BATCHES}
    want = torch_detect(model, images)
    cases = [one_export(model, k, cap, images, labels, want, out / f"cap_{cap}" / "model.onnx", repeats)
             for cap in caps]
    for case in cases:
        case["torch_images_per_second"] = speed
    return cases


def supports(root: Path, train: list[Path], sizes: list[int]) -> dict[int, Path]:
    """Folders of the first K normal images (symbolic links), one per K of ``sizes``."""
    out = {}
    for k in sizes:
        out[k] = root / f"support_{k}"
        out[k].mkdir()
        for f in train[:k]:
            (out[k] / f.name).symlink_to(f)
    return out


def model_and_label(profile, checkpoint: str | None):
    if checkpoint is None:
        try:
            checkpoint = str(default_checkpoint(profile, train_if_missing=False))
        except MissingModelError:
            return load_model(profile, None, device="cpu"), "untrained (the profile's default model is not trained)"
    return load_model(profile, checkpoint, device="cpu"), checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="a trained model (default: the profile's default model)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the test images (best kept)")
    ap.add_argument("--normals", type=int, default=200, help="images of the large support (default 200)")
    ap.add_argument("--tests", type=int, default=32, help="test images, half defective (default 32)")
    ap.add_argument("--cap", type=int, default=MEMORY_CAP, help=f"memory patches per level (default {MEMORY_CAP})")
    ap.add_argument("--out", default=None, help="JSON report (default: printed only)")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    profile = load_profile("offline")
    model, label = model_and_label(profile, args.checkpoint)
    side = profile.data.image_size
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        tmp = Path(tmp)
        cat = generate_synthetic(tmp / "data", categories=["fabric"], n_train=args.normals, n_test=args.tests,
                                 size=side, seed=7)
        cat = cat / "fabric"
        tests = sorted(p for p in (cat / "test").rglob("*.png"))
        images = torch.stack([load_image(f, side) for f in tests])
        labels = np.array([0 if f.parent.name == "good" else 1 for f in tests])
        plan = {SHOTS: [args.cap], args.normals: [args.cap, None]}  # K -> caps (None: the whole memory)
        folders = supports(tmp, list_images(cat / "train" / "good"), list(plan))
        cases = [case for k, caps in plan.items()
                 for case in one_support(model, folders[k], caps, images, labels, tmp / f"k{k}", args.repeats)]
    report = {"profile": "offline", "model": label, "cpu": cpu_model(), "cpus": os.cpu_count(), "threads": THREADS,
              "load_average": os.getloadavg(), "test_images": len(tests), "cases": cases}
    for case in cases:
        print(case["support_images"], case["cap"], case["size_mb"], case["torch_images_per_second"],
              case["onnxruntime_images_per_second"], case["against_torch"], sep="\n  ")
    if args.out:
        write_json(args.out, report, run=provenance(profile=profile, data="synthetic fabric, generated (seed 7)",
                                                    note="images per second: best of the passes"))


if __name__ == "__main__":
    main()
