"""Random weights in the official file formats of the paper profile's three models, at any size.

The paper-size CPU benchmark (benchmarks/paper_size_cpu.py) and the tests of tests/paper_profile write their
files here, so a test loads the files the benchmark loads, at another size (:class:`PaperFiles`):

* CLIP: an open_clip checkpoint as open_clip's training script saves one (``{"epoch", "name", "state_dict"}``,
  DistributedDataParallel's ``module.`` prefix), with the keys and shapes of ``open_clip.create_model(name)`` at
  the published file's 224 px (the profile runs it at 240 px: the positional embedding is resized on load).
* SAM: a plain state dict with the keys of ``sam_vit_h_4b8939.pth`` (segment_anything's ``Sam.state_dict()``).
* LLaVA: a Hugging Face folder as ``llava-hf/llava-1.5-7b-hf`` holds it: ``config.json`` and
  ``generation_config.json``, float16 safetensors shards with the checkpoint's key names
  (``language_model.model.layers.0...``) and their ``model.safetensors.index.json``, a Llama tokenizer
  (``tokenizer.json``: byte-fallback BPE with ``<image>`` and ``<pad>`` added after the vocabulary, as LLaVA-1.5
  adds them) and the processor's files. The tokenizer is trained offline on a small corpus: about 800 tokens where
  Vicuna's has 32,000 (no ``tokenizer.model``: sentencepiece is not installed); the embedding rows stay
  ``text["vocab_size"]`` (32,064 at full size).

Nothing is ever held twice: every model is built on the meta device for its key names and shapes, and random
tensors are drawn one at a time (:func:`random_tensors`); the LLaVA shards are written one after the other
(:func:`write_llava`), so writing LLaVA-1.5-7B needs one shard's memory (:data:`SHARD_BYTES`), not 14 GB.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import open_clip
import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    GenerationConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.core_model_loading import revert_weight_conversion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from samllava.coarse.clip_model import architecture_name  # noqa: E402
from samllava.core.config import ClipConfig, Profile, load_profile  # noqa: E402
from samllava.describe.lora import PAPER_LLAVA_CONFIG, PAPER_TEXT_CONFIG, PAPER_VISION_CONFIG  # noqa: E402
from samllava.sam.build import SAM_REGISTRY  # noqa: E402
from make_tiny_tokenizer import corpus  # noqa: E402  (tools/make_tiny_tokenizer.py: the domain's sentences)

SHARD_BYTES = 4_000_000_000  # LLaVA shard size; llava-1.5-7b-hf has three shards of at most 5 GB
INIT_STD = 0.02  # standard deviation of random weight matrices (transformers' initializer_range)
LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature
VOCAB_MULTIPLE = 64  # llava-1.5-7b-hf pads its 32,002 tokens to 32,064 embedding rows
# What the paper profile takes from the tiny profile to run files of tiny widths (PaperFiles.tiny)
TINY_FIELDS = ("clip.model_name", "clip.model_config", "clip.image_size", "clip.layers", "clip.blur_sigma",
               "fewshot.layers", "fewshot.image_size", "multiscale.kernels", "sasa.align_dim", "sasa.num_heads",
               "sasa.grid", "lora.r", "lora.alpha", "data.image_size")


@dataclass(frozen=True)
class PaperFiles:
    """What the three files hold. The defaults are the published files' architectures.

    ``clip``: the open_clip architecture (name, inline config for tiny widths, depth of both towers) and the
    side the file is written at. ``sam_*``: a :data:`samllava.sam.build.SAM_REGISTRY` size, its depth (None: the
    size's own) and input side. ``text`` / ``vision``: changes to the LLaVA-1.5-7B configs (Vicuna-7B and CLIP
    ViT-L/14-336, :data:`samllava.describe.lora.PAPER_TEXT_CONFIG`), ``tokenizer_vocab`` the most tokens the
    trained tokenizer may have (the corpus gives about 800). ``sam_image_size`` and ``clip.depth`` / ``sam_depth``
    are profile fields too (:meth:`profile`).
    """

    clip: ClipConfig = field(default_factory=lambda: ClipConfig(image_size=224, weights=None))
    sam_size: str = "vit_h"
    sam_depth: int | None = None
    sam_image_size: int = 1024
    text: dict = field(default_factory=dict)
    vision: dict = field(default_factory=dict)
    tokenizer_vocab: int = 1000
    seed: int = 0

    @classmethod
    def reduced(cls, sam_image_size: int = 1024) -> "PaperFiles":
        """The paper's widths, heads and patch sizes with few blocks: the CI files (tests/paper_profile).

        CLIP ViT-B-16 with 3 blocks per tower (three, so the profile's three tapped layers stay three), SAM ViT-H
        with 2 encoder blocks (one windowed, one global), LLaVA with a 1-layer Vicuna (width 4096, 32 heads; MLP
        width 1,024 instead of 11,008; 1,024 embedding rows) and a 2-layer ViT-L/14-336 tower (LLaVA reads the
        second-to-last layer's output: with 2 layers it is a real block's).
        """
        return cls(clip=ClipConfig(image_size=224, weights=None, depth=3), sam_depth=2, sam_image_size=sam_image_size,
                   text={"num_hidden_layers": 1, "intermediate_size": 1024, "vocab_size": 1024},
                   vision={"num_hidden_layers": 2})

    @classmethod
    def tiny(cls) -> "PaperFiles":
        """Tiny widths in the same formats (the tiny profile's CLIP and SAM sizes; a small LLaVA): seconds."""
        tiny = load_profile("tiny")
        return cls(clip=ClipConfig(model_name=tiny.clip.model_name, model_config=tiny.clip.model_config,
                                   image_size=tiny.clip.image_size, weights=None),
                   sam_size=tiny.sam.size, sam_image_size=tiny.sam.image_size,
                   text={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                         "num_key_value_heads": 4, "vocab_size": 1024},
                   vision={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "image_size": 56, "patch_size": 14, "projection_dim": 32})

    def llava_config(self, image_token: int, pad_token: int) -> LlavaConfig:
        """llava-1.5-7b-hf's configuration with this object's changes (``image_token`` / ``pad_token``: ids)."""
        text = {**PAPER_TEXT_CONFIG, "bos_token_id": 1, "eos_token_id": 2, **self.text}
        vision = {**PAPER_VISION_CONFIG, **self.vision}
        seq = (vision["image_size"] // vision["patch_size"]) ** 2
        config = LlavaConfig(vision_config=vision, text_config=text,
                             **{**PAPER_LLAVA_CONFIG, "image_token_index": image_token, "image_seq_length": seq},
                             pad_token_id=pad_token, tie_word_embeddings=False)
        config.dtype = torch.float16  # the checkpoint's dtype (config.json "dtype")
        config.architectures = ["LlavaForConditionalGeneration"]
        return config

    def profile(self, base: Profile | None = None) -> Profile:
        """``base`` (default: the paper profile) changed to run these files: CLIP's and SAM's depth and SAM's side
        (tapped CLIP blocks mapped by :func:`tapped_layers`), or for tiny widths their architectures. Weight ids,
        data, training and every other setting stay the base's."""
        base = base or load_profile("paper")
        changes: dict = {"sam.size": self.sam_size, "sam.depth": self.sam_depth, "sam.image_size": self.sam_image_size,
                         "llm.image_size": {**PAPER_VISION_CONFIG, **self.vision}["image_size"]}
        if self.clip.model_config is None:
            blocks = self.clip.depth or open_clip_depth(self.clip.model_name)
            changes.update({"clip.depth": self.clip.depth,
                            "clip.layers": tapped_layers(base.clip.layers, blocks),
                            "fewshot.layers": tapped_layers(base.fewshot.layers, blocks)})
        else:  # tiny widths: the tiny profile's CLIP, its side and taps, and the sizes that follow SAM's
            tiny = load_profile("tiny").to_dict()
            changes.update({dotted: tiny[dotted.split(".")[0]][dotted.split(".")[1]] for dotted in TINY_FIELDS})
        return base.replace(**changes)


def open_clip_depth(name: str) -> int:
    """Blocks of a registered open_clip architecture's vision tower."""
    return open_clip.get_model_config(name)["vision_cfg"]["layers"]


def tapped_layers(layers: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """1-based tapped blocks of a CLIP tower with ``depth`` blocks: ``layers`` where they all exist, else the last
    ``min(len(layers), depth)`` blocks (ViT-B-16's (3, 8, 12) and (6, 9, 12) become (1, 2, 3) with 3 blocks)."""
    if max(layers) <= depth:
        return tuple(layers)
    k = min(len(layers), depth)
    return tuple(range(depth - k + 1, depth + 1))


def random_tensors(shapes: dict[str, tuple[torch.Size, torch.dtype]], seed: int,
                   dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every entry of ``shapes``, drawn one at a time from ``seed``.

    Biases are zero, one-dimensional weights (norms) one, CLIP's ``logit_scale`` its initial log(1/0.07), every
    other floating tensor normal with std :data:`INIT_STD`; integer buffers are zero. ``dtype`` overrides the
    floating tensors' dtype (a float16 checkpoint)."""
    gen = torch.Generator().manual_seed(seed)
    for name, (shape, kind) in shapes.items():
        kind = dtype if dtype is not None and kind.is_floating_point else kind
        leaf = name.rsplit(".", 1)[-1]
        if not kind.is_floating_point:
            t = torch.zeros(shape, dtype=kind)
        elif leaf == "bias":
            t = torch.zeros(shape, dtype=kind)
        elif leaf == "weight" and len(shape) == 1:
            t = torch.ones(shape, dtype=kind)
        elif leaf == "logit_scale":
            t = torch.full(shape, LOGIT_SCALE, dtype=kind)
        else:
            t = (torch.randn(shape, generator=gen) * INIT_STD).to(kind)
        yield name, t


def _meta_shapes(module: torch.nn.Module) -> dict[str, tuple[torch.Size, torch.dtype]]:
    return {k: (v.shape, v.dtype) for k, v in module.state_dict().items()}


def write_clip(files: PaperFiles, path: Path) -> Path:
    """The open_clip checkpoint of ``files.clip`` at ``files.clip.image_size`` (float32, as published)."""
    name = architecture_name(files.clip)
    with torch.device("meta"):
        model = open_clip.create_model(name, pretrained=None, force_image_size=files.clip.image_size, device="meta")
    state = {f"module.{k}": v for k, v in random_tensors(_meta_shapes(model), files.seed)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 32, "name": f"{name}-random", "state_dict": state}, path)
    return path


def sam_shapes(files: PaperFiles) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Key names, shapes and dtypes of the SAM checkpoint (``Sam.state_dict()``: segment_anything's keys)."""
    depth = {} if files.sam_depth is None else {"depth": files.sam_depth}
    with torch.device("meta"):
        model = SAM_REGISTRY[files.sam_size](image_size=files.sam_image_size, **depth)
    return _meta_shapes(model)


def write_sam(files: PaperFiles, path: Path) -> Path:
    """The SAM checkpoint: a plain float32 state dict, as ``sam_vit_h_4b8939.pth``."""
    state = dict(random_tensors(sam_shapes(files), files.seed + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def train_llama_tokenizer(vocab_size: int) -> LlamaTokenizer:
    """A Llama tokenizer (byte-fallback BPE, ``▁`` word marks, ``<unk>`` ``<s>`` ``</s>`` = 0, 1, 2, the 256 byte
    tokens ``<0x00>`` ... ``<0xFF>`` = 3 ... 258 as in Llama's vocabulary) of ``vocab_size`` tokens, trained on the
    domain's sentences, with LLaVA-1.5's ``<image>`` and ``<pad>`` after them."""
    specials = ["<unk>", "<s>", "</s>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, min_frequency=2, special_tokens=specials,
                                  show_progress=False)
    bpe.train_from_iterator(corpus(), trainer=trainer)
    learned = [t for t, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]) if t not in specials]
    tokens = specials + [f"<0x{i:02X}>" for i in range(256)] + learned
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in
              json.loads(bpe.to_str())["model"]["merges"]]
    tok = LlamaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, add_bos_token=True,
                         add_eos_token=False)
    tok.add_tokens([AddedToken("<image>", special=True, normalized=False)])
    tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def llava_shapes(config: LlavaConfig) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """The checkpoint's key names (``save_pretrained``'s, reverting transformers' renaming) and shapes."""
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    saved = revert_weight_conversion(model, model.state_dict())
    return {k: (v.shape, v.dtype) for k, v in sorted(saved.items())}


def write_llava(files: PaperFiles, folder: Path, shard_bytes: int = SHARD_BYTES, save_pretrained: bool = False) -> Path:
    """The LLaVA folder: tokenizer and processor files, configs, float16 shards written one at a time, index.

    ``save_pretrained``: the model built in memory (transformers' own initialisation, float16) and written by
    ``save_pretrained``, for sizes that fit in memory twice (the CI files); both give the same file names, keys,
    shapes and dtypes (tests/paper_profile)."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_llama_tokenizer(files.tokenizer_vocab)
    image_token, pad_token = tok.convert_tokens_to_ids("<image>"), tok.pad_token_id
    rows = files.text.get("vocab_size", PAPER_TEXT_CONFIG["vocab_size"])
    if rows < len(tok) or rows % VOCAB_MULTIPLE:
        raise ValueError(f"text vocab_size {rows}: must hold the tokenizer's {len(tok)} tokens and be a multiple "
                         f"of {VOCAB_MULTIPLE}")
    config = files.llava_config(image_token, pad_token)
    side = config.vision_config.image_size
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        tokenizer=tok, patch_size=config.vision_config.patch_size, vision_feature_select_strategy="default")
    processor.save_pretrained(folder)  # tokenizer files and processor_config.json
    if save_pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(files.seed + 2)
            model = LlavaForConditionalGeneration(config)
        model.generation_config = _generation_config(pad_token)
        model.half().save_pretrained(folder, max_shard_size=shard_bytes)
        return folder
    config.save_pretrained(folder)
    _generation_config(pad_token).save_pretrained(folder)
    shapes = llava_shapes(config)
    groups, size = [[]], 0
    for name, (shape, _) in shapes.items():
        nbytes = 2 * math.prod(shape)
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    tensors = random_tensors(shapes, files.seed + 2, dtype=torch.float16)  # drawn in key order, shard by shard
    weight_map, total = {}, 0
    for i, names in enumerate(groups):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        part = dict(next(tensors) for _ in names)
        total += sum(t.numel() * t.element_size() for t in part.values())
        save_file(part, str(folder / shard), metadata={"format": "pt"})
        weight_map.update({n: shard for n in names})
        del part
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


def _generation_config(pad_token: int) -> GenerationConfig:
    return GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=pad_token)


def write_all(files: PaperFiles, directory: Path, shard_bytes: int = SHARD_BYTES,
              save_pretrained: bool = False) -> dict[str, Path]:
    """The three files under ``directory`` with the published names: ``{"clip": ..., "sam": ..., "llava": ...}``."""
    directory = Path(directory)
    return {"clip": write_clip(files, directory / "vit_b_16-laion400m_e32.pt"),
            "sam": write_sam(files, directory / "sam_vit_h_4b8939.pth"),
            "llava": write_llava(files, directory / "llava-1.5-7b-hf", shard_bytes, save_pretrained)}


def size_on_disk(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(os.path.getsize(p) for p in path.rglob("*") if p.is_file())
