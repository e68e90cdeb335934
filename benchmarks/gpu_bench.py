"""The prepared GPU benchmark of Table 11: the paper-size architectures (random weights) on one GPU.

Run as a whole:  python benchmarks/gpu_bench.py --out DIR
1. checks the same code and options on the CPU with the tiny profile in bf16 (a minute or two,
   most of it compiling the decode step; --compile-mode none: the eager step; --skip-cpu-check skips
   it) and writes gpu_bench.json with its time (tests/benchmarks runs this part);
2. on CUDA, builds the paper profile's architectures (CLIP ViT-B/16 at 240 px, SAM ViT-H, LLaVA-1.5-7B;
   random weights: weights do not change speed) and runs them the fast way (docs/gpu.md): every weight in
   bf16 (autocast only around SAM's prompt encoder), SAM's encoder attention through SDPA, in chunks of
   --sam-chunk images, LoRA merged into the base weights while generating, the decode step compiled
   (--compile-mode) and captured as a CUDA graph;
3. measures per-stage latency at batch 1 (SAM's encoder also with float32 weights), the whole diagnosis
   with the static-cache decoder (128 tokens) at batch 1, 8 and 32, peak memory, and one training step
   with LoRA at batch 4. Writes gpu_bench.json after every measurement (a run cut short keeps what it
   measured) and prints it at the end. The options used are in the report's "options".
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from samllava.evaluate.bench import BenchSettings, bench  # noqa: E402
from samllava.core.config import load_profile  # noqa: E402
from samllava.core.provenance import provenance  # noqa: E402
from samllava.core.results import write_json  # noqa: E402
from fast_decode import FastDecodeBench  # noqa: E402  (benchmarks/fast_decode.py)


def fast_options(args) -> dict:
    """The bench options of the fast path, the same for the CPU check and the GPU run."""
    return dict(dtype="bfloat16", cast_weights=True, merge_lora=True, sam_float32=True)


def fast_decoding(args, batch_sizes: tuple[int, ...]) -> FastDecodeBench:
    """The static-cache decoder's end-to-end measurements (benchmarks/fast_decode.py)."""
    return FastDecodeBench(batch_sizes, None if args.compile_mode == "none" else args.compile_mode)


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "results"))
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--sam-chunk", type=int, default=8, help="images per SAM encoder call (0: the whole batch)")
    # "default": fusion without autotuning, about a minute per compile (batch 1, then once more for
    # batches > 1); "max-autotune-no-cudagraphs" also autotunes every matmul and reduction, several
    # minutes more in a run that must stay under 8
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode of the decode step (default, max-autotune-no-cudagraphs, ...) "
                        "or 'none' for the eager step")
    p.add_argument("--skip-cpu-check", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = provenance(profile="paper", data="none (random inputs)", device=device,
                     note="paper-size architectures with random weights (speed does not depend on the weights)")

    def save(gpu_report=None):
        if gpu_report is not None:
            report["gpu"] = gpu_report
        write_json(out / "gpu_bench.json", report, run=run)

    if not args.skip_cpu_check:
        t = time.perf_counter()
        # batches of 1 and 3 with chunks of 2: the chunked SAM encoder runs a full and a partial chunk
        bench(
            load_profile("tiny"),
            BenchSettings(
                device="cpu",
                runs=1,
                warmup=1,
                new_tokens=4,
                batch_sizes=(),
                train_batch=2,
                sam_chunk=2,
                **fast_options(args),
            ),
            extra=fast_decoding(args, (1, 3)),
        )
        report["cpu_check_s"] = time.perf_counter() - t
        save()
        print(f"[gpu_bench] CPU check passed in {report['cpu_check_s']:.1f} s", flush=True)
    if not torch.cuda.is_available():
        print("[gpu_bench] no CUDA device: stopping after the CPU check")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        # transformers' generate() end to end is left out (batch_sizes=()): the stage
        # llava_generate_<n>_tokens still times it at batch 1
        settings = BenchSettings(device="cuda", runs=args.runs, warmup=args.warmup, new_tokens=args.new_tokens,
                                 batch_sizes=(), train_batch=4, sam_chunk=args.sam_chunk, **fast_options(args))
        report["gpu"] = bench(load_profile("paper"), settings, log=lambda m: print(m, flush=True), on_update=save,
                              extra=fast_decoding(args, (1, 8, 32)))
    finally:
        save()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
