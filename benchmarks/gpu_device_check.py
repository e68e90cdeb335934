"""The device check of a GPU machine: the package's own commands on CUDA, with the paper profile's sizes.

Run as a whole:  python benchmarks/gpu_device_check.py --out DIR   (about 5-8 minutes on one H200)
1. the tiny profile on the GPU: build, prepare, one epoch of training (micro-batches chosen from free memory),
   answers, evaluation of three methods, a diagnosis; the checkpoint read back on the CPU and on the GPU;
2. the paper profile's architectures with random weights (samllava.evaluate.bench.random_weights: weights do not
   change what runs where), built with the default device and dtype policy: the frozen encodings of a few
   256-px images, one training step of the paper's batch of 8 (micro-batches from free memory), evaluation
   of the full method, answers and one diagnosis; the batch sizes chosen and the peak memory;
3. with two GPUs or more: ``torchrun`` training and sharded evaluation of the tiny profile (NCCL).
Writes device_check.json after every part (a run cut short keeps what it did) and exits non-zero when a
part failed. ``--device cpu --paper-profile tiny`` runs parts 1 and 2 on the CPU, part 2 with the tiny profile's
sizes (a check of this script, tests/benchmarks).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from samllava.evaluate.answers import answer  # noqa: E402
from samllava.core.batching import BatchSizer  # noqa: E402
from samllava.evaluate.bench import random_weights  # noqa: E402
from samllava.model.checkpoint import DESCRIBER, WRAPPED, load_checkpoint, load_model  # noqa: E402
from samllava.core.config import load_profile  # noqa: E402
from samllava.data import generate_synthetic, load_dataset  # noqa: E402
from samllava.core.device import describe, resolve_device  # noqa: E402
from samllava.evaluate.harness import CascadeMethod, CoarseMethod, FullMethod, evaluate  # noqa: E402
from samllava.model.encoded_data import prepare  # noqa: E402
from samllava.model.sam_llava import build_model  # noqa: E402
from samllava.diagnose.report import report_fields  # noqa: E402
from samllava.train.end_to_end import epoch_batches, param_groups, train, train_step  # noqa: E402


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def tiny_on_device(device: torch.device, work: Path) -> dict:
    """Part 1: the tiny pipeline on ``device`` and its checkpoint on the CPU and back."""
    profile = load_profile("tiny")
    data = load_dataset(generate_synthetic(work / "syn64", categories=["fabric", "bottle_cap"], n_train=2, n_test=8,
                                           size=64, seed=1))
    model = build_model(profile, device=device)
    examples = prepare(model, data, 64, shots=1, progress=False)
    history = train(model, examples, epochs=1, out_dir=work / "tiny", progress=False)
    texts = answer(model, examples, max_new_tokens=4, progress=False)
    coarse = CoarseMethod(profile, device=device)
    metrics = {name: evaluate(m, data, shots=1, image_size=64, progress=False)["fabric"].summary()["image_auroc"]
               for name, m in (("full", FullMethod(profile, model=model)), ("coarse", coarse),
                               ("cascade", CascadeMethod(coarse, model.cascade)))}
    cat = data["fabric"]
    diagnosis = model.diagnose(cat.load_images(cat.test[:1], 64), "fabric", cat.load_images(cat.train[:1], 64),
                               max_new_tokens=4)[0]
    on_cpu = load_model(profile, work / "tiny", device="cpu")
    back = build_model(profile, device=device)
    load_checkpoint(back, work / "tiny")
    state = model.trainable_state()
    folded = on_cpu.trainable_state()  # load_model folds LoRA into the weights: the other parts keep their values
    same = all(torch.equal(back.trainable_state()[k], v) for k, v in state.items()) and all(
        torch.equal(folded[k.replace(WRAPPED, DESCRIBER, 1)], v.cpu()) for k, v in state.items() if ".lora_" not in k)
    return {"device": describe(device), "steps": len(history), "last_loss": history[-1]["total"],
            "answers": sum(len(t) for t in texts), "image_auroc": metrics, "diagnosis": report_fields(diagnosis),
            "checkpoint_round_trip_equal": same, "peak_memory_GB": peak_gb(device)}


def paper_sizes(device: torch.device, work: Path, name: str = "paper") -> dict:
    """Part 2: the paper profile's architectures (random weights) under the default dtype policy; ``name``: another
    profile (the tiny one: this part's check on the CPU)."""
    profile = random_weights(load_profile(name))
    t0 = time.perf_counter()
    model = build_model(profile, device=device, init_device=device)  # random weights: drawn on the GPU (fast)
    out = {"build_s": time.perf_counter() - t0,
           "dtypes": {"sam_encoder": str(model.cascade.sam.image_encoder.patch_embed.proj.weight.dtype),
                      "llava": str(model.describer.llava.lm_head.weight.dtype),
                      "clip": str(next(model.coarse.parameters()).dtype),
                      "trainable": sorted({str(p.dtype) for p in model.trainable_parameters()})},
           "weights_GB": peak_gb(device)}
    data = load_dataset(generate_synthetic(work / "syn256", categories=["fabric"], n_train=2, n_test=8, size=256,
                                           seed=1))
    t0 = time.perf_counter()
    examples = prepare(model, data, 256, shots=1, progress=False)
    out["prepare_s_per_image"] = (time.perf_counter() - t0) / len(examples[0])
    optimizer = torch.optim.Adam(param_groups(model), lr=profile.train.lr, foreach=True)
    sizer = BatchSizer(device, 8, None, profile.gpu.memory_fraction)
    model.train()
    _, idx = epoch_batches(examples, 8, 0, 0)[0]
    t0 = time.perf_counter()
    losses = train_step(model, optimizer, examples[0], idx, sizer=sizer)
    out["train_step"] = {"s": time.perf_counter() - t0, "losses": losses, "micro_batch": sizer.size,
                         "item_GB": (sizer.item_bytes or 0) / 1e9, "peak_memory_GB": peak_gb(device)}
    model.eval()
    res = evaluate(FullMethod(profile, model=model), data, shots=1, image_size=256, progress=False)
    out["evaluate_image_auroc"] = res["fabric"].summary()["image_auroc"]
    t0 = time.perf_counter()
    texts = answer(model, examples, max_new_tokens=16, progress=False)
    out["answers"] = {"s": time.perf_counter() - t0, "n": len(texts[0]), "peak_memory_GB": peak_gb(device)}
    cat = data["fabric"]
    diagnosis = model.diagnose(cat.load_images(cat.test[:1], 256), "fabric", cat.load_images(cat.train[:1], 256),
                               max_new_tokens=16)[0]
    out["diagnosis"] = report_fields(diagnosis)
    out["peak_memory_GB"] = peak_gb(device)
    return out


def several_gpus(work: Path) -> dict:
    """Part 3: torchrun over every GPU (NCCL): training and sharded evaluation of the tiny profile."""
    n = torch.cuda.device_count()
    env = {**os.environ, "SAMLLAVA_DATA_DIR": str(work / "data")}
    root = generate_synthetic(work / "syn_eval", categories=["fabric", "bottle_cap"], n_train=4, n_test=8, size=64)
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
    train_run = subprocess.run([*run, "-m", "samllava", "train", "--profile", "tiny", "--epochs", "1", "--out",
                                str(work / "ddp"), "--no-progress", "--device", "cuda"],
                               env=env, capture_output=True, text=True, timeout=900)
    args = ["evaluate", "--profile", "tiny", "--data", str(root), "--shots", "1", "--seeds", "0,1", "--device", "cuda"]
    eval_run = subprocess.run([*run, "-m", "samllava", *args, "--out", str(work / "ddp_eval.json")],
                              env=env, capture_output=True, text=True, timeout=900)
    one = subprocess.run([sys.executable, "-m", "samllava", *args, "--out", str(work / "one_eval.json")],
                         env=env, capture_output=True, text=True, timeout=900)
    out = {"gpus": n, "train_rc": train_run.returncode, "evaluate_rc": eval_run.returncode,
           "train_tail": train_run.stdout[-800:] + train_run.stderr[-1500:], "evaluate_tail": eval_run.stderr[-1500:]}
    if eval_run.returncode == 0 and one.returncode == 0:
        a, b = (json.loads((work / f).read_text()) for f in ("ddp_eval.json", "one_eval.json"))
        out["sharded_mean"], out["one_process_mean"] = a["mean"], b["mean"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "results"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--skip-paper", action="store_true")
    p.add_argument("--paper-profile", default="paper",
                   help="profile of part 2 (default paper; tiny: part 2's code on the CPU in seconds)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__, "device": describe(device)}
    parts = [("tiny", lambda w: tiny_on_device(device, w))]
    if not args.skip_paper:
        parts.append(("paper_random_weights", lambda w: paper_sizes(device, w, args.paper_profile)))
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        parts.append(("several_gpus", several_gpus))
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, part in parts:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            try:
                report[name] = part(Path(tmp) / name)
            except Exception:  # noqa: BLE001 - one failed part must not lose the others
                report[name] = {"error": traceback.format_exc()[-4000:]}
                failed += 1
            report[name]["seconds"] = time.perf_counter() - t0
            print(f"[device_check] {name}: {'failed' if 'error' in report[name] else 'ok'} "
                  f"in {report[name]['seconds']:.1f} s", flush=True)
            (out / "device_check.json").write_text(json.dumps(report, indent=1, default=_plain))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(json.dumps(report, indent=1, default=_plain))
    return 1 if failed else 0


def _plain(x):
    return x.item() if isinstance(x, (np.generic, torch.Tensor)) else str(x)


if __name__ == "__main__":
    sys.exit(main())
