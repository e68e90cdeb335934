"""Table 11 and the parameter table: parameter counts, latency, throughput and memory beside the paper's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from samllava.evaluate.bench import BenchSettings, bench, parameter_counts
from samllava.coarse.clip_model import build_clip
from samllava.core.config import Profile, load_profile
from samllava.describe.lora import paper_parameter_counts
from samllava.core.device import resolve_device
from samllava.model.sam_llava import build_model
from samllava.report.paper_values import INFERENCE_BATCH, TABLE11
from samllava.sam import SamCascade
from samllava.sam.build import SAM_REGISTRY
from samllava.describe.sasa import Sasa
from samllava.notebook.tables.trained import model_dir


def parameter_table(profiles=("tiny", "offline")) -> pd.DataFrame:
    """Total, trainable and LoRA parameters (millions) of the whole model per profile; the paper
    profile's LLaVA part is counted on the meta device (no 7B weights loaded)."""
    rows = []
    for name in profiles:
        m = build_model(load_profile(name), device="cpu")  # counting only
        rows.append({"profile": name, "scope": "whole model", **parameter_counts(m)})
    paper = paper_parameter_counts()
    rows.append({"profile": "paper", "scope": "LLaVA-1.5-7B + LoRA only (meta device)", "total_M": paper["total"] / 1e6,
                 "trainable_M": paper["trainable"] / 1e6, "lora_M": paper["lora"] / 1e6})
    return pd.DataFrame(rows)


def gpu_rows(path: str | Path | None) -> list[dict]:
    """Table 11 rows from a ``benchmarks/gpu_bench.py`` result (paper-size models, random weights, named
    card): one at batch 1 (latency, throughput and peak memory, beside the paper's batch-1 row) and one at
    the batch size with the best throughput (its own row: the paper reports none). None or a missing file:
    no rows."""
    if path is None or not Path(path).is_file():
        return []
    g = json.loads(Path(path).read_text())["gpu"]
    fast = {k: v for k, v in g.get("end_to_end_fast", {}).items() if "images_per_s" in v}
    best_key = max(fast, key=lambda k: fast[k]["images_per_s"], default=None)
    rows = []
    for key in dict.fromkeys(k for k in ("batch_1", best_key) if k in fast):
        m = fast[key]
        rows.append({
            "model": f"SAM-LLaVA, paper profile, random weights ({g['device']}, {g['dtype']}, {g['new_tokens']} new "
                     f"tokens, {m.get('runs', 'n/a')} runs after {m.get('warmup', 'n/a')}; {Path(path).name})",
            "device": f"{g['device']} (paper architectures, random weights)",
            "batch": int(key.removeprefix("batch_")),
            "total_M": g["params"]["total_M"],
            "trainable_M": g["params"]["trainable_M"],
            "lora_M": g["params"]["lora_M"],
            "training_time_h": np.nan,
            "latency_ms": m.get("mean_ms", np.nan),
            "throughput_img_s": m.get("images_per_s", np.nan),
            "peak_memory_GB": m.get("peak_memory_GB", np.nan),
        })
    return rows


def complexity_table(profile: Profile, device: str | torch.device | None = "cpu", runs: int = 5, warmup: int = 1,
                     new_tokens: int = 32, gpu_json: str | Path | None = None) -> pd.DataFrame:
    """Table 11: parameters (this profile measured; the paper profile counted on the meta device),
    latency, throughput and peak memory measured on ``device`` at batch 1, beside the paper's rows (batch 1);
    with ``gpu_json``, the paper-size GPU benchmark's rows (:func:`gpu_rows`), never a CPU number."""
    r = bench(profile, BenchSettings(device=str(resolve_device(device)), runs=runs, warmup=warmup,
                                     new_tokens=new_tokens, batch_sizes=(1,), random=False), log=lambda m: None)
    e2e = r["end_to_end"]["batch_1"]
    hist_time = _training_time(profile)
    # the machine goes in its own column, not in the label: the reproduction check matches rows by label, and a
    # rerun on another CPU or thread count is the same row measured elsewhere (docs/reproduction.md)
    rows = [{"model": f"SAM-LLaVA, {profile.name} profile (this run)", "device": r["device"], "batch": 1,
             "total_M": r["params"]["total_M"], "trainable_M": r["params"]["trainable_M"],
             "lora_M": r["params"]["lora_M"], "training_time_h": hist_time, "latency_ms": e2e.get("mean_ms", np.nan),
             "throughput_img_s": e2e.get("images_per_s", np.nan), "peak_memory_GB": r["peak_memory_GB"]}]
    pc = paper_profile_counts()
    rows.append({"model": "SAM-LLaVA, paper profile (counted from its configuration)", "batch": np.nan,
                 "total_M": pc["total_M"], "trainable_M": pc["trainable_M"], "lora_M": pc["lora_M"],
                 "training_time_h": np.nan, "latency_ms": np.nan, "throughput_img_s": np.nan,
                 "peak_memory_GB": np.nan})
    rows += gpu_rows(gpu_json)
    for m, v in TABLE11.items():
        rows.append({"model": f"{m} (paper, L40)", "batch": INFERENCE_BATCH, "total_M": v["total_M"],
                     "trainable_M": v["trainable_M"],
                     "lora_M": v.get("lora_M", np.nan), "training_time_h": v["train_hours"],
                     "latency_ms": v["latency_ms"], "throughput_img_s": v.get("throughput_img_s", np.nan),
                     "peak_memory_GB": v.get("peak_memory_GB", np.nan)})
    df = pd.DataFrame(rows)
    df["batch"] = df["batch"].astype("Int64")  # printed as 1, not 1.00; empty for the counted-only row
    return df


def _training_time(profile: Profile) -> float:
    """Hours of the cached main training run of ``profile`` (NaN when it has not run)."""
    done = model_dir(profile) / "done.json"
    if not done.exists():
        return float("nan")
    return json.loads(done.read_text()).get("seconds", float("nan")) / 3600


def paper_profile_counts() -> dict[str, float]:
    """Parameters (millions) of the paper profile's whole model without reading or allocating its
    weights: SAM ViT-H and LLaVA-1.5-7B with LoRA are built on the meta device; CLIP ViT-B/16
    (open_clip builds on a real device) and SASA are small enough to build on the CPU."""
    p = load_profile("paper")
    clip, _ = build_clip(p.clip, None)
    with torch.device("meta"):
        cascade = SamCascade(SAM_REGISTRY[p.sam.size](p.sam.image_size), p.sam, p.multiscale)
    llava = paper_parameter_counts(p.lora)
    sasa = Sasa(p.sasa, vis_dim=cascade.sam.prompt_encoder.embed_dim, text_dim=clip.visual.output_dim,
                llm_dim=4096)

    def n(ps):
        return sum(q.numel() for q in ps)

    total = n(clip.parameters()) + n(cascade.parameters()) + n(sasa.parameters()) + llava["total"]
    trainable = n(cascade.trainable_parameters()) + n(sasa.parameters()) + llava["trainable"]
    return {"total_M": total / 1e6, "trainable_M": trainable / 1e6, "lora_M": llava["lora"] / 1e6}
