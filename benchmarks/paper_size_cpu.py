"""One diagnosis at the paper's real sizes on the CPU: random weights in the official formats, the real loading road.

Run:  python benchmarks/paper_size_cpu.py --dir DIR [--out results]   (DIR: 17.3 GB free; tens of minutes)
      python benchmarks/paper_size_cpu.py --tiny --dir DIR --out DIR2  (the same code at tiny widths: seconds)
1. writes open_clip ViT-B-16 (224-px file, run at 240 px), SAM ViT-H (1024 px) and LLaVA-1.5-7B (Vicuna-7B +
   CLIP ViT-L/14-336, float16 shards) with random weights in the published formats (benchmarks/paper_files.py:
   meta-device shapes, tensors drawn one at a time, one shard in memory at once); a DIR that already holds them
   (its files.json names the same sizes) is reused;
2. points SAMLLAVA_CLIP_VIT_B16, SAMLLAVA_SAM_VIT_H and SAMLLAVA_LLAVA_7B at them, so the weights registry
   resolves them and the builders check them as they check downloaded files;
3. builds the paper profile's model on the CPU with the frozen towers in --dtype (SAM's image encoder and LLaVA;
   CLIP and the trained parts stay float32), safetensors read straight into that dtype;
4. diagnoses one image through `samllava diagnose`'s road (samllava.diagnose.run.Diagnoser, an untrained model:
   speed and memory do not depend on the weights) with --shots normal images and a --new-tokens answer, timing
   every stage (prefill and per-token decoding from the language model head's calls);
5. writes DIR_OUT/paper_size_cpu.json (labelled "random weights, CPU"): seconds per stage, the tokens decoded,
   peak resident memory after each phase, the files' sizes, the options.

Memory at the real sizes (the estimate behind docs/gpu.md), --dtype bfloat16: LLaVA-1.5-7B 7.06 B parameters x 2
bytes = 14.1 GB, SAM ViT-H 0.64 B: 2.6 GB in float32 while LLaVA loads (its encoder is cast to 1.3 GB after),
CLIP 0.15 B: 0.6 GB; SAM's global attention at 1024 px holds a (1, 16, 4096, 4096) bias (0.5 GB in bfloat16), the
KV cache of ~1,000 + 128 tokens 0.6 GB: about 19-20 GB in use at the peak, which fits 24 GB with little room for
anything else (the peak resident set can also count the pages of the shard being read, up to 4 GB of page cache
the kernel may drop). float32 does not fit: LLaVA alone is 28.2 GB. Writing needs one shard (4 GB) at a time.
Caches (the support's fitted memory) go to DIR/cache, never to the user's weights folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from samllava.assets import weights  # noqa: E402
from samllava.core.provenance import provenance  # noqa: E402
from samllava.core.results import write_json  # noqa: E402
from samllava.data import generate_synthetic  # noqa: E402
from samllava.diagnose.run import Diagnoser  # noqa: E402
from samllava.evaluate.bench import parameter_counts  # noqa: E402
from samllava.model.sam_llava import build_model  # noqa: E402
from paper_files import PaperFiles, size_on_disk, write_all  # noqa: E402  (benchmarks/paper_files.py)

LABEL = "random weights, CPU"
ENV = {"clip": "SAMLLAVA_CLIP_VIT_B16", "sam": "SAMLLAVA_SAM_VIT_H", "llava": "SAMLLAVA_LLAVA_7B"}
WEIGHT_IDS = {"clip": "clip_vit_b16_laion400m", "sam": "sam_vit_h", "llava": "llava_1_5_7b"}


def peak_rss_gb() -> float:
    """This process's peak resident set so far, in GB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


class StageClock:
    """Seconds and calls per stage, from wrappers put on a model instance's methods (the model is unchanged)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.started: dict[str, float] = {}  # the last call's start, per stage
        self.returned: dict[str, object] = {}  # the last call's result, per stage
        self.token_times: list[float] = []

    def wrap(self, owner, attr: str, stage: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            self.started[stage] = start = time.perf_counter()
            try:
                self.returned[stage] = out = inner(*args, **kwargs)
                return out
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
                self.calls[stage] = self.calls.get(stage, 0) + 1

        setattr(owner, attr, timed)

    def watch_tokens(self, head: torch.nn.Module) -> None:
        """One time stamp per call of the language model's head: the prefill's end, then one per decoding pass."""
        head.register_forward_hook(lambda *_: self.token_times.append(time.perf_counter()))

    def clear(self) -> None:
        for record in (self.seconds, self.calls, self.started, self.returned):
            record.clear()
        self.token_times.clear()

    def language_model(self) -> dict:
        """Prefill (vision tower, projector and the prompt's forward pass: generation's start to the head's first
        call), decoding passes and their mean time, and the new tokens."""
        ticks, ids = self.token_times, self.returned.get("llava_generate")
        if not ticks or "llava_generate" not in self.started:
            return {}
        return {"prefill_s": ticks[0] - self.started["llava_generate"], "passes": len(ticks),
                "decode_s_per_pass": (ticks[-1] - ticks[0]) / (len(ticks) - 1) if len(ticks) > 1 else None,
                "new_tokens": int(ids.shape[-1]) if isinstance(ids, torch.Tensor) else None}


def instrument(model, clock: StageClock) -> None:
    """Time each stage of a diagnosis (samllava.model.sam_llava.SamLlava.diagnose_with_support's calls)."""
    clock.wrap(model, "text", "clip_text_per_category")
    clock.wrap(model.coarse, "forward", "coarse_zero_and_few_shot")
    clock.wrap(model.cascade, "embed", "sam_image_encoder")
    clock.wrap(model, "fine", "sam_prompt_and_decoder")
    clock.wrap(model, "align", "sasa")
    clock.wrap(model.describer, "generate_ids", "llava_generate")
    clock.watch_tokens(model.describer.llava.lm_head)


def ensure_files(files: PaperFiles, directory: Path, log) -> tuple[dict[str, Path], dict]:
    """The three files in ``directory`` (written unless its files.json names the same sizes) and the write times."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "files.json"
    wanted = json.dumps(dataclasses.asdict(files), sort_keys=True, default=str)
    paths = {"clip": directory / "vit_b_16-laion400m_e32.pt", "sam": directory / "sam_vit_h_4b8939.pth",
             "llava": directory / "llava-1.5-7b-hf"}
    if manifest.is_file() and manifest.read_text() == wanted and all(p.exists() for p in paths.values()):
        log(f"[paper_size_cpu] reusing the files in {directory}")
        return paths, {"reused": True}
    manifest.unlink(missing_ok=True)
    t = time.perf_counter()
    log(f"[paper_size_cpu] writing random weights in the official formats into {directory}")
    paths = write_all(files, directory)
    manifest.write_text(wanted)
    return paths, {"reused": False, "seconds": time.perf_counter() - t, "peak_rss_GB": peak_rss_gb()}


def image_and_support(root: Path, side: int, shots: int) -> tuple[Path, Path]:
    """A defective test image and ``shots`` normal images (a synthetic MVTec-layout category)."""
    cat = generate_synthetic(root, categories=["fabric"], n_train=shots, n_test=2, size=side, seed=0) / "fabric"
    defect = next(p for p in sorted((cat / "test").rglob("*.png")) if p.parent.name != "good")
    Image.open(defect).load()
    return defect, cat / "train" / "good"


def run(args) -> dict:
    log = print if not args.quiet else (lambda *_: None)
    files = PaperFiles.tiny() if args.tiny else PaperFiles()
    paths, written = ensure_files(files, Path(args.dir), log)
    os.environ[weights.CACHE_ENV] = str(Path(args.dir) / "cache")  # features of random weights stay with them
    for part, path in paths.items():
        os.environ[ENV[part]] = str(path)  # resolved by samllava.assets.weights, as a downloaded file
    resolved = {part: str(weights.resolve(WEIGHT_IDS[part])) for part in paths}
    profile = files.profile()
    dtype = getattr(torch, args.dtype)
    t = time.perf_counter()
    model = build_model(profile, device="cpu", dtype=dtype).eval()
    load_s = time.perf_counter() - t
    log(f"[paper_size_cpu] loaded in {load_s:.1f} s, peak RSS {peak_rss_gb():.1f} GB")
    load_rss = peak_rss_gb()
    clock = StageClock()
    instrument(model, clock)
    image, support = image_and_support(Path(args.dir) / "images", profile.data.image_size, args.shots)
    diagnoser = Diagnoser(profile, "untrained (random weights)", model=model, progress=False)
    t = time.perf_counter()
    diagnoser.set_support(support)
    support_s = time.perf_counter() - t
    support_stages = dict(clock.seconds)  # CLIP's text (once per category) and the support's passes
    clock.clear()
    t = time.perf_counter()
    diagnoser.run([image], Path(args.dir) / "diagnosis", max_new_tokens=args.new_tokens, progress=False)
    total_s = time.perf_counter() - t
    report = {
        "label": LABEL,
        "sizes": "tiny widths (--tiny: a check of this script)" if args.tiny else "the paper's",
        "dtype": {"sam_image_encoder_and_llava": args.dtype, "clip_and_trained_parts": "float32"},
        "threads": torch.get_num_threads(),
        "files": {part: {"path": str(p), "bytes": size_on_disk(p), "weight_id": WEIGHT_IDS[part], "env": ENV[part]}
                  for part, p in paths.items()},
        "resolved": resolved,
        "write": written,
        "params_M": parameter_counts(model),
        "load_s": load_s,
        "support_fit_s": support_s,
        "support_stages_s": support_stages,
        "support_images": args.shots,
        "stages_s": dict(clock.seconds),
        "stage_calls": dict(clock.calls),
        "language_model": {"new_tokens_requested": args.new_tokens, **clock.language_model()},
        "diagnosis_total_s": total_s,
        "peak_rss_GB": {"after_writing": written.get("peak_rss_GB"), "after_loading": load_rss,
                        "after_diagnosis": peak_rss_gb()},
    }
    log(f"[paper_size_cpu] diagnosis in {total_s:.1f} s: {json.dumps(report['stages_s'])}")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="folder for the written weights (17.3 GB at the paper's sizes)")
    p.add_argument("--out", default=os.environ.get("OUT", "results"), help="folder of paper_size_cpu.json")
    p.add_argument("--dtype", default="bfloat16", help="SAM's image encoder and LLaVA (default bfloat16)")
    p.add_argument("--new-tokens", type=int, default=128, help="longest answer, in tokens (default 128)")
    p.add_argument("--shots", type=int, default=4, help="normal images of the support folder (default 4)")
    p.add_argument("--tiny", action="store_true", help="tiny widths, same formats and road: seconds")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    report = run(args)
    run_record = provenance(profile=PaperFiles.tiny().profile() if args.tiny else PaperFiles().profile(),
                            data="one synthetic image and its normal images", device="cpu", note=LABEL)
    run_record["weights"] = ("random weights written in the official formats (benchmarks/paper_files.py), resolved "
                             "as clip_vit_b16_laion400m, sam_vit_h and llava_1_5_7b")
    path = write_json(Path(args.out) / "paper_size_cpu.json", report, run=run_record)
    print(f"[paper_size_cpu] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
