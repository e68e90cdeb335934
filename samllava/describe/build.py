"""Building the describer of a profile: two builders (:data:`BUILDERS`, keyed by ``LlmConfig.kind``).

* ``llava_from_lm`` - a new LLaVA (random CLIP vision tower and projector) around a language model
  that is either random (``text_config``, the tiny profile) or a real causal LM given by a weight id
  (the offline profile: SmolLM2-135M-Instruct from a GGUF file, de-quantised once and cached as
  safetensors under ``weights.cache_dir()/converted``).
* ``llava_hf`` - a Hugging Face LLaVA checkpoint folder (the paper's llava-1.5-7b-hf).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.initialization import no_init_weights
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from samllava.assets import weights
from samllava.core.config import LlmConfig, Profile
from samllava.core.results import user_mode
from samllava.describe.llava import Describer, token_id
from samllava.describe.template import IMAGE_TOKEN, SASA_TOKEN, SYSTEM


def add_placeholder_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give ``tokenizer`` the ``<image>`` and ``<sasa>`` special tokens (and a pad token) if missing."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (IMAGE_TOKEN, SASA_TOKEN) if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked out and unlabelled
    return tokenizer


def _fit_vocab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the embeddings to the tokenizer.

    The new input rows are never read (placeholder positions are overwritten). They and the new
    output rows are set to zero rather than sampled, so that two builds of the same base model give
    identical logits (an adapter trained on one loads onto the other).
    """
    old = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            model.get_input_embeddings().weight[old:] = 0
            model.get_output_embeddings().weight[old:] = 0


def _base_id(name: str, config: LlavaConfig) -> str:
    """Weight name plus a digest of the architecture: what a LoRA adapter must match."""
    t, v = config.text_config, config.vision_config
    arch = [t.hidden_size, t.num_hidden_layers, t.num_attention_heads, getattr(t, "num_key_value_heads", None),
            t.intermediate_size, v.hidden_size, v.num_hidden_layers, v.image_size, v.patch_size]
    return f"{name}@{hashlib.sha256(json.dumps(arch).encode()).hexdigest()[:12]}"


def _dtype(cfg: LlmConfig) -> torch.dtype:
    dtype = getattr(torch, cfg.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"llm.dtype={cfg.dtype!r} is not a torch dtype name (e.g. 'float32', 'bfloat16')")
    return dtype


def converted_lm_dir(gguf_path: Path) -> Path:
    """Cache folder of a de-quantised GGUF model, ready for LLaVA (keyed by file name and size; "llava": the
    placeholder tokens are in its tokenizer and its embeddings have their rows)."""
    return weights.cache_dir() / "converted" / f"{gguf_path.stem}-{gguf_path.stat().st_size}-llava"


def load_causal_lm(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a HF folder or a GGUF file.

    A GGUF file is de-quantised once (slow), given the placeholder tokens (:func:`add_placeholder_tokens`,
    the embeddings grown by :func:`_fit_vocab`) and saved as safetensors under :func:`converted_lm_dir`,
    written to a temporary folder and renamed into place, so a killed run never leaves half a cache; later
    calls read the cache back with :func:`load_converted`.
    """
    if path.is_dir():
        return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    if path.suffix != ".gguf":
        raise ValueError(f"language model weights {path}: expected a model folder or a .gguf file")
    dest = converted_lm_dir(path)
    if dest.is_dir():  # the tokenizer this package saved there: a fast one (AutoTokenizer would read more to find it)
        return load_converted(dest), PreTrainedTokenizerFast.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The tensors are de-quantised to float32 already, but transformers keeps a "gguf" quantizer
    # marker that refuses save_pretrained: drop it, so the cache is a plain float32 checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer = add_placeholder_tokens(AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    _fit_vocab(model, tokenizer)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        user_mode(tmp, directory=True)  # mkdtemp's folder is private (0700): other users share this cache
        try:
            os.replace(tmp, dest)
        except OSError:  # another process finished first: keep its copy
            if not dest.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return model, tokenizer


def load_converted(folder: Path) -> PreTrainedModel:
    """The causal LM that :func:`load_causal_lm` saved in ``folder``, in eval mode, its weights memory-mapped
    from the safetensors files. The model is built without drawing weights and the files are assigned to
    it: ``from_pretrained``'s general loader (key renaming, device maps, quantisers) is not needed for a
    plain float32 checkpoint this package wrote (docs/decisions.md). Weights the files lack must be tied to
    weights they hold (the output head to the embeddings); anything else is refused, naming ``folder``."""
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    state = {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    loaded = {t.data_ptr() for t in state.values()}
    untied = [k for k in result.missing_keys if model.get_parameter(k).data_ptr() not in loaded]
    if untied or result.unexpected_keys:
        raise ValueError(f"converted language model {folder}: weights missing {untied[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}; delete the folder to convert again")
    gen = folder / "generation_config.json"
    if gen.is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()


def _build_from_lm(profile: Profile, seed: int,
                   dtype: torch.dtype) -> tuple[LlavaForConditionalGeneration, PreTrainedTokenizerBase, str]:
    """New LLaVA (random vision tower + projector) around a random or pretrained language model.

    The random parts are drawn from ``seed`` (global RNG state untouched): they are part of the
    base model, not of a LoRA adapter, so every build of a profile must give the same ones. They are
    drawn in float32 whatever ``dtype`` (:func:`build_describer` casts them), so every dtype starts from
    the same draws.
    """
    cfg = profile.llm
    if cfg.vision_config is None:
        raise ValueError(f"profile {profile.name!r}: llm.kind='llava_from_lm' needs llm.vision_config")
    vision = CLIPVisionConfig(**cfg.vision_config)
    if vision.image_size != cfg.image_size:
        raise ValueError(f"profile {profile.name!r}: llm.image_size={cfg.image_size} differs from "
                         f"vision_config.image_size={vision.image_size}")
    lm_path = weights.require(profile, "llm", cfg.weights)
    lm = None
    if lm_path is None:
        if cfg.text_config is None or cfg.tokenizer is None:
            raise ValueError(
                f"profile {profile.name!r}: a random language model needs llm.text_config and llm.tokenizer"
            )
        tokenizer = add_placeholder_tokens(AutoTokenizer.from_pretrained(weights.resolve(cfg.tokenizer)))
        text = LlamaConfig(
            **{
                "vocab_size": len(tokenizer),
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
                **cfg.text_config,
            }
        )
    else:
        if cfg.text_config is not None:
            raise ValueError(
                f"profile {profile.name!r}: llm.text_config must be null when llm.weights gives the language model"
            )
        lm, tokenizer = load_causal_lm(lm_path)
        if cfg.tokenizer is not None:
            tokenizer = AutoTokenizer.from_pretrained(weights.resolve(cfg.tokenizer))
        tokenizer = add_placeholder_tokens(tokenizer)
        text = lm.config
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=token_id(tokenizer, IMAGE_TOKEN),
                         image_seq_length=(vision.image_size // vision.patch_size) ** 2)
    if lm is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlavaForConditionalGeneration(config)
    else:
        model = _around_lm(config, lm, seed)
    return model, tokenizer, _base_id(cfg.weights or f"random:{profile.name}:{seed}", config)


def _around_lm(config: LlavaConfig, lm: PreTrainedModel, seed: int) -> LlavaForConditionalGeneration:
    """LLaVA whose language model and head are ``lm``'s own modules; only the vision tower and the projector
    are drawn (from ``seed``). The skeleton is built on the meta device, so no language model is drawn at
    random only to be overwritten (docs/decisions.md)."""
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.model.vision_tower = AutoModel.from_config(config.vision_config)
        model.model.multi_modal_projector = LlavaMultiModalProjector(config)
    model.model.language_model, model.lm_head = lm.model, lm.lm_head
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"LLaVA around {type(lm).__name__}: parts left unbuilt: {left[:3]}")
    return model


def _build_hf(profile: Profile, seed: int,
              dtype: torch.dtype) -> tuple[LlavaForConditionalGeneration, PreTrainedTokenizerBase, str]:
    """A LLaVA checkpoint folder in the Hugging Face format (llava-hf/llava-1.5-7b-hf); nothing random (seed unused).

    Read straight into ``dtype``: the file's float16 values reach float32 exactly (through bfloat16 they would
    lose three mantissa bits), and a 7B model is never held twice while it is cast.
    """
    cfg = profile.llm
    folder = weights.require(profile, "llm", cfg.weights)
    if folder is None:
        raise ValueError(f"profile {profile.name!r}: llm.kind='llava_hf' needs llm.weights (a checkpoint folder)")
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    if model.config.vision_config.image_size != cfg.image_size:
        raise ValueError(f"{folder}: vision tower takes {model.config.vision_config.image_size} px "
                         f"but llm.image_size={cfg.image_size}")
    tokenizer = add_placeholder_tokens(
        AutoTokenizer.from_pretrained(weights.resolve(cfg.tokenizer) if cfg.tokenizer else folder)
    )
    return model, tokenizer, _base_id(cfg.weights, model.config)


BUILDERS: dict[str, Callable[[Profile, int, torch.dtype],
                              tuple[LlavaForConditionalGeneration, PreTrainedTokenizerBase, str]]] = {
    "llava_from_lm": _build_from_lm,
    "llava_hf": _build_hf,
}


def build_describer(profile: Profile, system: str | None = None, seed: int = 0,
                    vision_channels: int | None = None, dtype: torch.dtype | None = None) -> Describer:
    """The describer of ``profile`` (``profile.llm.kind`` picks the builder).

    Args:
        system: system message of the template; None takes ``profile.llm.system`` (None there:
            LLaVA-1.5's; "" shortens every prompt, e.g. for CPU budgets).
        seed: seed of the randomly initialised parts (vision tower, projector, a random LM).
        vision_channels: width C of the backbone features LLaVA reads with ``llm.vision =
            "fewshot_backbone"``: its projector is then built anew for C inputs (and trained).
        dtype: the weights' dtype; None: ``profile.llm.dtype`` (:func:`samllava.model.sam_llava.build_model` passes
            float32 on the CPU, :func:`samllava.core.device.tower_dtype`).
    """
    cfg = profile.llm
    if cfg.kind not in BUILDERS:
        raise ValueError(f"profile {profile.name!r}: unknown llm.kind={cfg.kind!r}; known: {sorted(BUILDERS)}")
    dtype = dtype or _dtype(cfg)
    model, tokenizer, base_id = BUILDERS[cfg.kind](profile, seed, dtype)
    _fit_vocab(model, tokenizer)
    model.config.image_token_id = token_id(tokenizer, IMAGE_TOKEN)
    grid = None
    if cfg.vision == "fewshot_backbone":
        if vision_channels is None:
            raise ValueError(f"profile {profile.name!r}: llm.vision='fewshot_backbone' needs the backbone's width")
        grid = cfg.vision_grid
        model.model.multi_modal_projector = _projector(model.config, vision_channels, seed)
        base_id += f"+backbone-tokens:{vision_channels}x{grid * grid}"
    elif cfg.vision != "tower":
        raise ValueError(f"profile {profile.name!r}: llm.vision={cfg.vision!r}: expected 'tower' or 'fewshot_backbone'")
    model.to(dtype)
    if system is None:
        system = SYSTEM if cfg.system is None else cfg.system
    return Describer(model, tokenizer, base_id=base_id, system=system, max_new_tokens=cfg.max_new_tokens,
                     vision_grid=grid)


def _projector(config: LlavaConfig, in_features: int, seed: int) -> nn.Module:
    """LLaVA's own projector class (linear, GELU, linear) for ``in_features`` inputs, drawn from ``seed``."""
    wide = copy.deepcopy(config)
    wide.vision_config.hidden_size = in_features
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return LlavaMultiModalProjector(wide)
