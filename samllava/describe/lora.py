"""LoRA on LLaVA's language model only (Sec. 3.4, Sec. 4.4).

Adapters of rank r and scale alpha go into the attention Q, V projections and the FFN layers of
every language-model layer. Plain module names such as ``q_proj`` also match the CLIP vision
tower, so the targets are one regex over module paths rooted at ``model.language_model``. A is
initialised Kaiming-normal and B zero (Sec. 4.4; peft's default A is Kaiming-uniform), so the
adapted model starts equal to the base model. Everything else of LLaVA, the vision tower and the
multi-modal projector included, is frozen.

:func:`paper_parameter_counts` counts the paper's LLaVA-1.5-7B + LoRA on the meta device: the
architecture below is data (the llava-hf/llava-1.5-7b-hf config), no weights are read.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from samllava.core.config import LoraSettings, load_profile
from samllava.describe.llava import Describer

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel
# peft is imported by the functions that wrap, merge, save or load adapters: loading a trained model for
# inference (samllava.model.checkpoint.load_model, fold_lora) never needs it (docs/decisions.md).

LANGUAGE_MODEL_PREFIX = r"model\.language_model\.layers\.\d+\.(?:self_attn|mlp)\."

# llava-hf/llava-1.5-7b-hf: Vicuna-7B-v1.5 (Llama-2 7B) + CLIP ViT-L/14 at 336 px.
PAPER_TEXT_CONFIG = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5)
PAPER_VISION_CONFIG = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14, projection_dim=768, vocab_size=32000)
PAPER_LLAVA_CONFIG = dict(image_token_index=32000, image_seq_length=576, projector_hidden_act="gelu",
                          vision_feature_layer=-2, vision_feature_select_strategy="default")


def target_regex(targets: tuple[str, ...] | list[str]) -> str:
    """Regex (peft full-matches it) selecting ``targets`` inside the language model's layers only."""
    if not targets:
        raise ValueError("lora.targets is empty: name at least one linear layer, e.g. 'q_proj'")
    return LANGUAGE_MODEL_PREFIX + "(?:" + "|".join(re.escape(t) for t in targets) + ")"


def lora_config(settings: LoraSettings) -> LoraConfig:
    from peft import LoraConfig  # here: loading for inference never needs peft (docs/decisions.md)
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=target_regex(settings.targets), bias="none")


def _wrap(model: LlavaForConditionalGeneration, config: LoraConfig, base_id: str) -> PeftModel:
    """Inject LoRA (in place), re-initialise it as in the paper, freeze everything else."""
    from peft import get_peft_model  # here, as in lora_config
    peft_model = get_peft_model(model, config)  # peft raises ValueError when no module matches
    for module in peft_model.modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict):
            for name in module.lora_A:
                nn.init.kaiming_normal_(module.lora_A[name].weight)  # paper: Kaiming normal A ...
                nn.init.zeros_(module.lora_B[name].weight)  # ... and zero B: starts as the base model
    for name, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in name)  # vision tower, projector, embeddings, LM weights: frozen
    # get_peft_model records model.name_or_path ("" for from-config models, a local path otherwise):
    # record the path-independent identity of the base instead, checked by load_lora.
    peft_model.peft_config["default"].base_model_name_or_path = base_id
    return peft_model


def apply_lora(describer: Describer, settings: LoraSettings) -> Describer:
    """Put LoRA adapters on the describer's language model (Sec. 3.4); returns the same describer."""
    from peft import PeftModel  # here, as in lora_config
    if isinstance(describer.model, PeftModel):
        raise ValueError("the describer already has LoRA adapters")
    describer.model = _wrap(describer.llava, lora_config(settings), describer.base_id)
    return describer


def merge_lora(describer: Describer) -> Describer:
    """Fold the adapters into the language model's weights, W <- W + (alpha / r) B A (Sec. 3.4), for
    inference: each adapted layer then costs one matmul instead of three (decoding on a CPU is bound by
    the number of small matmuls per token; docs/decisions.md). Greedy answers are unchanged up
    to float rounding. A merged describer is for inference only: training it would update adapters that
    no longer take part in the forward pass, so :func:`samllava.train.train` never receives one. A describer
    without adapters, or one already merged, is returned as it is."""
    from peft import PeftModel  # here, as in lora_config
    model = describer.model
    if isinstance(model, PeftModel) and not any(getattr(m, "merged", False) for m in model.modules()):
        model.merge_adapter()
    return describer


ADAPTER_NAME = re.compile(r"(?P<layer>.+)\.lora_(?P<part>[AB])\.default\.weight")  # peft's name of an adapter weight


def adapter_pairs(llava: nn.Module, adapters: dict[str, torch.Tensor],
                  settings: LoraSettings) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (A, B)}`` of ``adapters`` (named as peft names them inside ``llava``:
    ``<layer>.lora_A.default.weight``, A (r, in), and ``...lora_B...``, B (out, r)), checked: every layer that
    ``settings.targets`` selects has its pair of the right shapes, and no other layer has one."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in adapters.items():
        m = ADAPTER_NAME.fullmatch(name)
        if m is None:
            raise ValueError(f"LoRA tensor {name!r}: not an adapter weight of the form "
                             "<layer>.lora_A|lora_B.default.weight")
        pairs.setdefault(m["layer"], {})[m["part"]] = value
    pattern = re.compile(target_regex(settings.targets))
    targets = {n for n, _ in llava.named_modules() if pattern.fullmatch(n)}
    if set(pairs) != targets:
        extra, lacking = sorted(set(pairs) - targets), sorted(targets - set(pairs))
        raise ValueError(f"LoRA adapters do not fit this model: {len(extra)} for layers it does not target "
                         f"{extra[:2]}, {len(lacking)} targeted layers without one {lacking[:2]}")
    out = {}
    for layer, pair in pairs.items():
        weight = llava.get_submodule(layer).weight  # (out, in)
        a, b = pair.get("A"), pair.get("B")
        shape_a, shape_b = (settings.r, weight.shape[1]), (weight.shape[0], settings.r)
        if a is None or b is None or a.shape != shape_a or b.shape != shape_b:
            raise ValueError(f"LoRA adapter of {layer}: expected A {shape_a} and B {shape_b}, got A "
                             f"{None if a is None else tuple(a.shape)}, B {None if b is None else tuple(b.shape)}")
        out[layer] = (a, b)
    return out


def fold_lora(llava: nn.Module, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], settings: LoraSettings) -> None:
    """Fold trained adapters (``pairs`` from :func:`adapter_pairs`) into a model built without them:
    W <- W + (alpha / r) B A (Sec. 3.4), what :func:`merge_lora` does to a wrapped model, without wrapping it
    first (loading a model for inference then skips peft's wrapping and merging; docs/decisions.md)."""
    scale = settings.alpha / settings.r
    with torch.no_grad():
        for layer, (a, b) in pairs.items():
            weight = llava.get_submodule(layer).weight
            delta = b.to(weight.device, torch.float32) @ a.to(weight.device, torch.float32)
            weight.add_(delta.mul_(scale).to(weight.dtype))


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"total", "trainable", "lora"}`` parameter counts (works on the meta device)."""
    params = list(model.named_parameters())  # deduplicated: tied weights count once
    return {"total": sum(p.numel() for _, p in params),
            "trainable": sum(p.numel() for _, p in params if p.requires_grad),
            "lora": sum(p.numel() for n, p in params if "lora_" in n)}


def paper_llava_config() -> LlavaConfig:
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**PAPER_VISION_CONFIG),
        text_config=LlamaConfig(**PAPER_TEXT_CONFIG),
        **PAPER_LLAVA_CONFIG,
    )


def paper_parameter_counts(settings: LoraSettings | None = None) -> dict[str, int]:
    """Parameter counts of LLaVA-1.5-7B with the paper's LoRA, computed without any weights."""
    settings = settings or load_profile("paper").lora
    with torch.device("meta"):
        model = _wrap(LlavaForConditionalGeneration(paper_llava_config()), lora_config(settings), "llava_1_5_7b")
    return parameter_counts(model)


def save_lora(describer: Describer, path: str | Path) -> Path:
    """Save the adapter (``adapter_config.json`` + ``adapter_model.safetensors``) into folder ``path``."""
    from peft import PeftModel  # here, as in lora_config
    if not isinstance(describer.model, PeftModel):
        raise ValueError("the describer has no LoRA adapters to save: call apply_lora first")
    # The embeddings are frozen (only their never-read placeholder rows were added): save the adapter alone.
    describer.model.save_pretrained(str(path), save_embedding_layers=False)
    return Path(path)


def load_lora(describer: Describer, path: str | Path) -> Describer:
    """Load an adapter saved by :func:`save_lora`, refusing one made for another base model."""
    from peft import (  # here, as in lora_config
        LoraConfig, PeftModel, get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict,
    )
    path = Path(path)
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"LoRA adapter {path}: no adapter_config.json")
    saved_base = json.loads(cfg_file.read_text()).get("base_model_name_or_path")
    if saved_base != describer.base_id:
        raise ValueError(f"LoRA adapter {path} was trained on base model {saved_base!r}, "
                         f"but this describer's base model is {describer.base_id!r}")
    if not isinstance(describer.model, PeftModel):
        config = LoraConfig.from_pretrained(str(path))
        config.base_model_name_or_path, config.inference_mode = None, False  # _wrap records the base; trainable
        describer.model = _wrap(describer.llava, config, describer.base_id)
    saved = load_peft_weights(str(path), device="cpu")
    expected = get_peft_model_state_dict(describer.model, save_embedding_layers=False)
    wrong = sorted(set(saved) ^ set(expected))
    wrong += [f"{k}: saved {tuple(v.shape)}, model {tuple(expected[k].shape)}"
              for k, v in saved.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"LoRA adapter {path} does not fit this describer ({len(wrong)} mismatches), e.g. {wrong[:3]}")
    set_peft_model_state_dict(describer.model, saved)
    return describer
