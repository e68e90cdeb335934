"""Issue 7's prepared GPU benchmark: the paper-size architectures (random weights) on one GPU.

Run as a whole:  python benchmarks/gpu_bench.py --out DIR
1. checks the same code on the CPU with the tiny profile (seconds);
2. on CUDA, builds the paper profile's architectures (CLIP ViT-B/16 at 240 px, SAM ViT-H, LLaVA-1.5-7B;
   random weights: weights do not change speed), language model in bf16, CLIP/SAM/SASA under bf16 autocast;
3. measures per-stage latency at batch 1, the whole diagnosis with transformers' generate() and with the
   static-cache CUDA-graph decoder (128 tokens) at batch 1, 8 and 32, peak memory, and one training step
   with LoRA at batch 4. Writes gpu_bench.json (and prints it).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from samllava.bench import bench  # noqa: E402
from samllava.config import load_profile  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "results"))
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--skip-cpu-check", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not args.skip_cpu_check:
        t = time.perf_counter()
        bench(load_profile("tiny"), "cpu", runs=1, warmup=1, new_tokens=4, batch_sizes=(1,), train_batch=2, fast_batch_sizes=(1,))
        report["cpu_check_s"] = time.perf_counter() - t
        print(f"[gpu_bench] CPU check passed in {report['cpu_check_s']:.1f} s", flush=True)
    if not torch.cuda.is_available():
        print("[gpu_bench] no CUDA device: stopping after the CPU check")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        report["gpu"] = bench(load_profile("paper"), "cuda", runs=args.runs, warmup=args.warmup, new_tokens=args.new_tokens,
                              batch_sizes=(1, 8), dtype="bfloat16", train_batch=4, fast_batch_sizes=(1, 8, 32),
                              log=lambda m: print(m, flush=True))
    finally:
        (out / "gpu_bench.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
