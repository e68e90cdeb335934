"""Complexity benchmark (Table 11, Sec. 5.3.5): parameters, per-stage latency, throughput, memory,
and one training step. A script, never a timed test.

``samllava bench --profile P --device D`` builds the profile's architectures with random weights
everywhere (:func:`random_weights`; ``BenchSettings.random``), which do not change speed. Latency is
the mean over ``runs`` timed runs after ``warmup`` untimed ones (the paper: 200 after 50, batch 1);
CUDA work is synchronised before each clock read. Output: a JSON report.

The speed options (weights cast instead of autocast, SAM's encoder in chunks, LoRA merged while
generating; :class:`BenchSettings`) are off by default; the report's ``options`` says which were used.
Further measurements are passed in as ``extra`` (the GPU benchmark's static-cache decoder,
``benchmarks/fast_decode.py``). SAM's encoder attention always runs through SDPA
(:mod:`samllava.sam.sdpa`).
"""
from __future__ import annotations

import gc
import resource
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from samllava.core.config import Profile
from samllava.data.instructions import ANSWER_ANOMALY, QUESTION
from samllava.describe.lora import PAPER_TEXT_CONFIG, PAPER_VISION_CONFIG
from samllava.model.sam_llava import build_model
from samllava.core.provenance import cpu_model
from samllava.sam.sdpa import SdpaAttention
from samllava.train.end_to_end import param_groups


def random_weights(profile: Profile) -> Profile:
    """The profile's architectures with random weights everywhere (for speed and memory only).

    A LLaVA checkpoint folder (``llm.kind = "llava_hf"``) is replaced by the same architecture built
    from its configuration (LLaVA-1.5-7B: Vicuna-7B + CLIP ViT-L/14-336) with the repository's
    small tokenizer: text lengths differ a little from Vicuna's tokenizer, shapes do not.
    """
    changes = {"random_ok": ["clip", "fewshot", "sam", "llm"], "clip.weights": None, "sam.weights": None}
    if profile.fewshot.backbone == "timm":
        changes["fewshot.weights"] = None
    if profile.llm.kind == "llava_hf":
        changes.update({"llm.kind": "llava_from_lm", "llm.weights": None, "llm.tokenizer": "tiny_tokenizer",
                        "llm.text_config": dict(PAPER_TEXT_CONFIG), "llm.vision_config": dict(PAPER_VISION_CONFIG),
                        "llm.image_size": PAPER_VISION_CONFIG["image_size"]})
    elif profile.llm.weights is not None:
        changes["llm.weights"] = None
        changes["llm.tokenizer"] = "tiny_tokenizer"
        if profile.llm.text_config is None:
            raise ValueError(f"profile {profile.name!r}: no text_config to build a random language model from")
    return profile.replace(**changes)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], runs: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Mean, std and median milliseconds of ``fn`` over ``runs`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(1000 * (time.perf_counter() - start))
    return {"mean_ms": statistics.fmean(times), "std_ms": statistics.pstdev(times),
            "median_ms": statistics.median(times), "runs": runs, "warmup": warmup}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset. CPU: the process's peak resident set (never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def parameter_counts(model) -> dict[str, float]:
    """Millions of parameters: total, trainable, LoRA."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    return {"total_M": total / 1e6, "trainable_M": trainable / 1e6, "lora_M": lora / 1e6}


class Precision:
    """How CLIP, SAM and SASA run when ``dtype`` is below float32 (the language model is always cast to it).

    ``cast=False``: float32 weights under autocast, in every stage.
    ``cast=True``: weights cast to ``dtype``, images too, and no autocast: no per-call weight casts and
    no float32 norms or softmaxes. Autocast stays on only in stages that run SAM's prompt encoder
    (``SamLlava.fine``), whose positional encodings build float32 grids that a cast SAM cannot
    multiply; there it costs little, the weights already being in ``dtype``.
    """

    def __init__(self, dev: torch.device, dtype: torch.dtype, cast: bool) -> None:
        self.dev, self.dtype = dev, dtype
        self.cast = cast and dtype != torch.float32

    def apply(self, model) -> None:
        """Cast the language model (always) and, with ``cast``, CLIP, SAM and SASA to ``dtype``."""
        model.describer.to(self.dtype)
        if self.cast:
            for part in (model.coarse, model.cascade, model.sasa):
                part.to(self.dtype)

    def autocast(self, prompt_encoder: bool = False):
        """A fresh autocast context; ``prompt_encoder``: the stage runs SAM's prompt encoder."""
        on = self.dtype != torch.float32 and (prompt_encoder or not self.cast)
        return torch.autocast(self.dev.type, dtype=self.dtype, enabled=on)

    def images(self, b: int, side: int) -> torch.Tensor:
        """(b, 3, side, side) random images in [0, 1], in the dtype CLIP and SAM take."""
        return torch.rand(b, 3, side, side, device=self.dev).to(self.dtype if self.cast else torch.float32)

    def describe(self) -> dict[str, str]:
        lm = str(self.dtype).removeprefix("torch.")
        if self.dtype == torch.float32:
            rest = "float32"
        elif self.cast:
            rest = f"{lm} weights, no autocast (autocast only around SAM's prompt encoder)"
        else:
            rest = f"float32 weights under {lm} autocast"
        return {"language_model": f"{lm} weights", "clip_sam_sasa": rest}


def chunk_sam_encoder(cascade, chunk: int) -> None:
    """Make ``cascade.embed`` run SAM's image encoder on at most ``chunk`` images at a time.

    The embeddings are the same (images are encoded independently); the encoder's activations are
    bounded (a global layer of ViT-H at 1024 px holds a (chunk, 16, 4096, 4096) relative-position
    mask), so that a batch of 32 fits beside a 7B language model. Changes this instance only.
    """
    embed = cascade.embed

    def chunked(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([embed(part) for part in images.split(chunk)])

    cascade.embed = chunked


@contextmanager
def merged_lora(describer, enabled: bool = True) -> Iterator[bool]:
    """Inside: the LoRA adapters folded into the base weights (W + scale * B A), so decoding runs
    plain linear layers, not two extra small matmuls per adapted layer; unfolded on exit (training
    needs them apart). Yields whether a merge took place (False without adapters or when disabled)."""
    peft_model = describer.model
    if not enabled or not hasattr(peft_model, "merge_adapter"):
        yield False
        return
    peft_model.merge_adapter()
    try:
        yield True
    finally:
        peft_model.unmerge_adapter()


@dataclass
class BenchSettings:
    """What :func:`bench` measures and how; every option is recorded in ``report["options"]``."""

    device: str = "cpu"
    runs: int = 20  # timed runs per measurement (the paper: 200)
    warmup: int = 5  # untimed runs before them (the paper: 50)
    new_tokens: int = 128  # tokens decoded per diagnosis
    batch_sizes: tuple[int, ...] = (1,)  # end to end with transformers' generate()
    train_batch: int = 0  # one optimiser step at this batch size (0: none)
    dtype: str = "float32"
    random: bool = True  # random weights everywhere (:func:`random_weights`): speed and memory only
    cast_weights: bool = False  # CLIP, SAM and SASA with ``dtype`` weights instead of autocast (:class:`Precision`)
    sam_chunk: int = 0  # > 0: SAM's encoder on at most this many images at a time (:func:`chunk_sam_encoder`)
    merge_lora: bool = False  # LoRA folded into the base weights for every generation (:func:`merged_lora`)
    sam_float32: bool = False  # also time SAM's encoder with float32 weights, before any cast, without autocast
    lookup_draft: int = 0  # batch 1 with prompt-lookup decoding (samllava.describe.lookup_decode, what diagnose
    # does for one image); 0: one pass per token, as the paper's latencies and the GPU rows were measured


class _Measurements:
    """The report of one :func:`bench` call, filled one measurement at a time.

    Each measurement runs on its own: one that fails (out of memory, say) is recorded as an
    ``error`` and the others go on; ``on_update(report)`` is called after each one.
    """

    def __init__(self, report: dict, prec: "Precision", log, on_update) -> None:
        self.report, self.prec, self.log, self.on_update = report, prec, log, on_update

    def __call__(self, section: str, key: str, fn, grad: bool = False, prompt_encoder: bool = False) -> None:
        out = self.report.setdefault(section, {})
        try:
            with torch.set_grad_enabled(grad), self.prec.autocast(prompt_encoder):
                out[key] = fn()
            self.log(f"[bench] {section}/{key}: {_short(out[key])}")
        except Exception as e:  # noqa: BLE001 - one failed measurement must not lose the others
            out[key] = {"error": f"{type(e).__name__}: {e}"[:500]}
            self.log(f"[bench] {section}/{key} failed: {out[key]['error']}")
            if self.prec.dev.type == "cuda":
                torch.cuda.empty_cache()
        gc.collect()  # a compiled decoder, once dropped, lives in reference cycles: free its cache before the next peak
        if self.on_update is not None:
            self.on_update(self.report)


def bench(profile: Profile, settings: BenchSettings | None = None, *, log=print, on_update=None,
          extra: Callable[..., None] | None = None) -> dict:
    """Per-stage latency at batch 1, end-to-end latency and throughput per batch size, memory, a training step.

    ``on_update(report)`` is called after each measurement, so a caller can save partial results.
    ``extra(model, prec, measure, settings)`` adds measurements of its own after the end-to-end ones
    (with LoRA merged when ``merge_lora``), each through ``measure(section, key, fn)``.
    """
    st = settings or BenchSettings()
    dev = torch.device(st.device)
    prec = Precision(dev, getattr(torch, st.dtype), st.cast_weights)
    kind = "random weights" if st.random else "its weights"
    log(f"[bench] building {profile.name} ({kind}) on {st.device} in {st.dtype}")
    t0 = time.perf_counter()
    with torch.device(dev):  # random weights are drawn on the device itself (fast); every tower float32 until
        # Precision.apply casts it (SAM's encoder is also timed in float32 first)
        model = build_model(random_weights(profile) if st.random else profile, device=dev, dtype=torch.float32,
                            init_device=None)
    model = model.eval()
    model.describer.lookup_draft = st.lookup_draft
    options = {"precision": prec.describe(), "lookup_draft": st.lookup_draft, "cast_weights": prec.cast,
               "sam_chunk": st.sam_chunk,
               "sam_sdpa_attention_modules": sum(isinstance(m, SdpaAttention) for m in model.cascade.modules()),
               "lora_merged_for_generation": False,
               "tf32_matmul": dev.type == "cuda" and torch.backends.cuda.matmul.allow_tf32}
    report = {"profile": profile.name, "random_weights": st.random, "device": _device_name(dev), "dtype": st.dtype,
              "torch": torch.__version__, "build_s": time.perf_counter() - t0, "params": parameter_counts(model),
              "options": options, "runs": st.runs, "warmup": st.warmup, "new_tokens": st.new_tokens, "stages_ms": {},
              "end_to_end": {}}
    log(f"[bench] built in {report['build_s']:.1f} s: {report['params']}; options {options}")
    measure = _Measurements(report, prec, log, on_update)
    _bench_stages(model, st, prec, measure, extra)
    if st.train_batch:
        measure("train", f"step_batch_{st.train_batch}",
                lambda: train_step(model, prec, st.train_batch, BENCH_CATEGORY, runs=max(1, st.runs // 4)),
                grad=True, prompt_encoder=True)
    report["peak_memory_GB"] = peak_memory_gb(dev)
    return report


BENCH_CATEGORY = "bottle"  # the category named in the benchmark's questions


def _bench_stages(model, st: BenchSettings, prec: Precision, measure: _Measurements, extra=None) -> None:
    """Every stage at batch 1, then whole diagnoses per batch size (LoRA merged with ``merge_lora``)."""
    dev, s, category = prec.dev, model.profile.data.image_size, BENCH_CATEGORY

    def time_it(fn):
        return time_fn(fn, st.runs, st.warmup, dev)

    if st.sam_float32:  # before the cast below: SAM's encoder as loaded, float32 weights, no autocast
        fp32 = torch.rand(1, 3, s, s, device=dev)
        measure("stages_ms", "sam_image_encoder_float32",
                lambda: _no_autocast(dev, lambda: time_it(lambda: model.cascade.embed(fp32))))
    prec.apply(model)
    if st.sam_chunk:
        chunk_sam_encoder(model.cascade, st.sam_chunk)
    images = prec.images(1, s)
    q = [QUESTION.format(category=category)]
    with torch.no_grad():
        with prec.autocast():
            feats, _ = model.text(category)
            model.set_support(prec.images(1, s))
        enc, fine, sasa_tokens = before_language_model(model, prec, images, category)
    few = max(1, st.runs // 4)
    measure("stages_ms", "clip_text_per_category",
            lambda: time_it(lambda: (model.text_cache.clear(), model.text(category))))
    measure("stages_ms", "coarse_zero_and_few_shot", lambda: time_it(lambda: model.coarse(images, feats)))
    measure("stages_ms", "sam_image_encoder", lambda: time_it(lambda: model.cascade.embed(images)))
    measure("stages_ms", "sam_prompt_and_decoder", lambda: time_it(lambda: model.fine(enc)), prompt_encoder=True)
    measure("stages_ms", "sasa", lambda: time_it(lambda: model.align(enc, fine)))
    with merged_lora(model.describer, st.merge_lora) as merged:
        measure.report["options"]["lora_merged_for_generation"] = merged
        measure("stages_ms", "llava_prefill_and_1_token",
                lambda: time_it(lambda: model.describer.generate(enc.visual, sasa_tokens, q, max_new_tokens=1)))
        measure("stages_ms", f"llava_generate_{st.new_tokens}_tokens", lambda: time_fn(
            lambda: model.describer.generate(enc.visual, sasa_tokens, q, max_new_tokens=st.new_tokens),
            few, 1, dev))
        for b in st.batch_sizes:  # each lambda runs inside its measure() call, with this b
            measure("end_to_end", f"batch_{b}", lambda b=b: _end_to_end(model, prec, b, category, st.new_tokens, few),
                    prompt_encoder=True)
        if extra is not None:
            extra(model, prec, measure, st)


def before_language_model(model, prec: Precision, images: torch.Tensor, category: str):
    """Every stage before the language model on (B, 3, S, S) images, each under its precision context:
    the frozen encodings, SAM's fine masks and the SASA tokens (B, N, llm_dim)."""
    with prec.autocast():
        enc = model.encode(images, category)
    with prec.autocast(prompt_encoder=True):
        fine = model.fine(enc)
    with prec.autocast():
        return enc, fine, model.align(enc, fine)


def _no_autocast(dev: torch.device, fn):
    with torch.autocast(dev.type, enabled=False):
        return fn()


def _short(d: dict) -> str:
    keys = ("mean_ms", "images_per_s", "ms_per_token", "peak_memory_GB")
    return ", ".join(f"{k} {d[k]:.2f}" for k in keys if k in d)


def _end_to_end(model, prec: Precision, b: int, category: str, new_tokens: int, runs: int) -> dict:
    """SamLlava.diagnose (transformers' generate) on a batch of b images."""
    batch = prec.images(b, model.profile.data.image_size)
    reset_peak(prec.dev)
    t = time_fn(lambda: model.diagnose(batch, category, max_new_tokens=new_tokens), runs, 1, prec.dev)
    t["images_per_s"] = 1000 * b / t["mean_ms"]
    t["peak_memory_GB"] = peak_memory_gb(prec.dev)
    return t


def train_step(model, prec: Precision, batch: int, category: str, runs: int = 3) -> dict:
    """Time and peak memory of one optimiser step of Eq. 9 at ``batch`` images (frozen parts cached)."""
    dev = prec.dev
    s = model.profile.data.image_size
    images = prec.images(batch, s)
    enc = model.encode(images, category)
    gt = torch.zeros(batch, s, s, device=dev)
    gt[:, s // 4: s // 2, s // 4: s // 2] = 1
    q = [QUESTION.format(category=category)] * batch
    a = [ANSWER_ANOMALY.format(position="top left") + " A small dark scratch."] * batch
    opt = torch.optim.Adam(param_groups(model))  # the trainer's optimiser (its groups and learning rates)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        model(enc, gt, q, a).total.backward()
        opt.step()

    reset_peak(dev)
    t = time_fn(step, runs, 1, dev)
    t["peak_memory_GB"] = peak_memory_gb(dev)
    t["batch"] = batch
    model.eval()
    return t


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"
