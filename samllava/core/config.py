"""Typed configuration of every stage, and the three profiles.

A profile is a JSON file in ``samllava/profiles/`` parsed into :class:`Profile`. The
architecture of each profile lives here as data, never in ``if`` chains on model names:

* ``tiny``    - the paper's architectures in structure, tiny in size, random weights (tests, CI).
* ``offline`` - real pretrained weights wherever a package ships them (EfficientNet-Lite0 for the
  few-shot memory, SmolLM2-135M-Instruct as the language model); tiny random CLIP and SAM.
* ``paper``   - open_clip ViT-B-16 (240 px, LAION-400M), SAM ViT-H, LLaVA-1.5-7B.

Weight fields hold a *weight id* (resolved by :mod:`samllava.assets.weights`) or ``null`` for random
initialisation. ``null`` is only accepted where the profile says ``random_ok`` for that component,
so the paper profile can never fall back to random weights silently.

Every default below is the paper profile's value (``profiles/paper.json`` spells out every field;
a test keeps the two equal), so a profile that leaves a field out gets what the paper runs. Every
switch is either an ablation of Tables 7-10 (``pipeline.ABLATIONS``) or set differently by the
shipped profiles (a test); a switch measured as no gain is removed, its measurement kept in docs/decisions.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles"
PROFILE_ENV = "SAMLLAVA_PROFILE"
DEFAULT_PROFILE = "offline"


@dataclass
class ClipConfig:
    """CLIP for the zero-shot coarse map (Sec. 3.1, Eq. 1)."""

    model_name: str = "ViT-B-16"  # open_clip architecture name (registered config)
    model_config: dict | None = None  # inline open_clip config for custom (tiny) architectures
    weights: str | None = "clip_vit_b16_laion400m"  # weight id (samllava.assets.weights) or None for random
    image_size: int = 240  # input side; open_clip is built with force_image_size
    # Transformer blocks of both towers (vision and text); None: the architecture's own (12 and 12 in ViT-B-16).
    # Fewer blocks make a cheaper model of the same widths and file format (the paper profile's CI tests).
    depth: int | None = None
    layers: tuple[int, ...] = (6, 9, 12)  # 1-based transformer blocks whose patch tokens are scored
    temperature: float = 0.07  # softmax temperature over {normal, anomalous}
    blur_sigma: float = 4.0  # Gaussian blur of the upsampled map, in output pixels (0 = off)


@dataclass
class FewShotConfig:
    """Few-shot memory calibration (Sec. 3.1, Eq. 2)."""

    backbone: str = "clip"  # "clip" (the CLIP image tower above) or "timm"
    timm_name: str | None = None  # timm architecture, e.g. "efficientnet_lite0"
    weights: str | None = None  # weight id of the timm backbone (None = random)
    layers: tuple[int, ...] = (3, 8, 12)  # CLIP blocks (1-based) or timm feature stages
    image_size: int = 240  # backbone input side for the memory features
    sharpness: float = 4.0  # beta in Lambda = sigmoid(beta * (s_ctx - 1)); see coarse.memory
    use_zero_shot: bool = True  # False: the zero-shot term H is inactive (H := 1)
    # False-positive rate the verdict aims at, calibrated on normal images alone (samllava.coarse.verdict):
    # a conformal p-value with enough normals, a Gumbel model with fewer.
    target_fpr: float = 0.2
    # Normal training images beyond the K shots that calibrate the verdict when a data set offers them
    # (samllava.data.fewshot.sample_calibration); the memory keeps the K shots. 0: the shots alone.
    calibration: int = 64


@dataclass
class SamConfig:
    """SAM (Sec. 3.1, Eq. 3-4). Sizes follow segment_anything.build_sam."""

    size: str = "vit_h"  # "tiny" | "vit_b" | "vit_l" | "vit_h": a key of sam.build registry
    # What computes F_sam (Eq. 3): "vit" = SAM's own image encoder; "fewshot_backbone" = the frozen few-shot
    # backbone with a trained adapter, a stand-in where no SAM weights exist (samllava.sam.backbone_encoder)
    encoder: str = "vit"
    weights: str | None = "sam_vit_h"  # weight id of an official-format checkpoint (None = random)
    # Image-encoder blocks; None: the size's own (32 in vit_h). Fewer blocks keep the size's widths, heads and
    # file format, with global attention where samllava.sam.build.global_blocks puts it (the CI tests).
    depth: int | None = None
    image_size: int = 1024  # SAM input side (1024 for the official models)
    prompt: str = "mask"  # "mask" | "box" | "point" | "mask+box" | "none" (Tables 7, 10)
    mask_logit: float = 8.0  # coarse mask -> +c inside / -c outside low-res logits


@dataclass
class MultiScaleConfig:
    """Multi-scale prompt learner (Eq. 5) and mask decoder (Eq. 6), Sec. 3.2."""

    prompt_learner: bool = True  # Table 8 "w/o MS-Prompt" = False
    decoder: bool = True  # Table 8 "w/o MS-Decoder" = False
    kernels: tuple[int, ...] = (8, 4, 2)  # pooling kernels k (large, medium, small); stride m = k
    branch_weights: tuple[float, float, float] = (0.3, 1.0, 0.2)  # (high, mid, low)
    focal_weight: float = 1.0  # lambda in Eq. 6


@dataclass
class SasaConfig:
    """Segmentation-Aware Semantic Alignment (Sec. 3.3, Eq. 7-8)."""

    enabled: bool = True  # False: plain concatenation (Table 9 "w/o SASA")
    align_dim: int = 256  # d_a
    num_heads: int = 8
    num_layers: int = 2  # bidirectional cross-attention layers
    grid: int = 16  # SAM features pooled to grid x grid visual tokens


@dataclass
class LlmConfig:
    """The describer: LLaVA (Sec. 3.3-3.4)."""

    kind: str = "llava_hf"  # "llava_hf" (a LLaVA checkpoint) | "llava_from_lm" (a causal LM + new tower)
    weights: str | None = "llava_1_5_7b"  # weight id (folder of a HF checkpoint or a GGUF asset)
    tokenizer: str | None = None  # weight id of the tokenizer; None = with the weights
    vision_config: dict | None = None  # CLIPVisionConfig kwargs when built from config
    text_config: dict | None = None  # LlamaConfig kwargs when built from config
    image_size: int = 336  # LLaVA vision tower input side
    # What LLaVA's image tokens read: "tower" = its CLIP vision tower on pixels; "fewshot_backbone" = the frozen
    # few-shot backbone's features average-pooled to vision_grid x vision_grid tokens, through a trained projector
    # (a stand-in where the tower's weights are random: the offline profile)
    vision: str = "tower"
    vision_grid: int = 3
    # The answer's "Yes," / "No," is the calibrated verdict's, pre-filled in the assistant's turn; the language
    # model writes the rest (what, where, how large). For language models measured not to carry the verdict
    # through training (offline: docs/verdict.md); the paper profile's LLaVA answers by itself.
    answer_from_verdict: bool = False
    # Report the model's text only when the measured facts support every claim of it (an object other than
    # the category, a colour, defect type or position the measurements contradict), else the facts' own
    # sentences (samllava.describe.wording.checked_words). Off in the paper profile: LLaVA writes its own words.
    check_words: bool = False
    max_new_tokens: int = 128
    dtype: str = "bfloat16"  # weights of LLaVA (language model and vision tower) on a GPU; the CPU: float32
    system: str | None = None  # system message of the template; None = LLaVA-1.5's, "" = none (shorter sequences)


@dataclass
class LoraSettings:
    """LoRA on the language model only (Sec. 3.4)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    """End-to-end training (Sec. 3.5, Sec. 4.4)."""

    lr: float = 1e-4
    batch_size: int = 8
    epochs: int = 50
    seed: int = 0
    seg_weight: float = 1.0  # alpha in Eq. 9
    gen_weight: float = 1.0  # gamma in Eq. 9
    sam_warmup_steps: int = 0  # SAM-side steps (Eq. 6 alone) before end-to-end training: stands in for
    sam_warmup_lr: float = 1e-3  # SAM's pretraining where SAM has random weights (tiny/offline profiles)
    sasa_lr: float | None = None  # SASA and its projections (None: lr); like LLaVA's projector, a new
    # module between frozen towers learns faster than the LoRA-adapted language model (offline profile)


@dataclass
class DataConfig:
    """Default data of the profile."""

    image_size: int = 256  # side the loaders resize to
    synthetic_images: int = 24  # test images per synthetic category (defects + good)
    synthetic_train: int = 8  # train/good images per synthetic category


@dataclass
class GpuConfig:
    """How the profile runs on a GPU (samllava.core.device, samllava.core.batching); the CPU ignores it (float32, the
    code's batch sizes). Batch sizes None are chosen from free memory, so one profile runs on 24 and 80 GB cards."""

    sam_dtype: str = "bfloat16"  # weights of SAM's frozen image encoder
    encode_batch: int | None = None  # images per pass of the frozen encoders (CLIP, SAM) and of evaluation
    describe_batch: int | None = None  # images per pass of the language model when answering
    train_micro_batch: int | None = None  # images per forward/backward; gradients accumulate to train.batch_size
    memory_fraction: float = 0.9  # share of the free memory that a batch chosen from it may fill


@dataclass
class Profile:
    name: str
    description: str = ""
    random_ok: tuple[str, ...] = ()  # components that may run with random weights
    clip: ClipConfig = field(default_factory=ClipConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    multiscale: MultiScaleConfig = field(default_factory=MultiScaleConfig)
    sasa: SasaConfig = field(default_factory=SasaConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)

    def replace(self, **changes: Any) -> "Profile":
        """A copy with dotted-path changes, e.g. ``replace(**{"sam.prompt": "box"})``."""
        return apply_overrides(self, changes)

    def weights_label(self) -> dict[str, str]:
        """Which pretrained component runs with real weights: ``{"clip": "random", ...}``, every one named.

        ``llm`` is LLaVA's language model; LLaVA's vision tower and projector come from the checkpoint with
        ``llava_hf`` and are new, random ones with ``llava_from_lm``. (SASA, the multi-scale parts and LoRA
        are new in every profile, the paper's included, and are trained, not loaded.)
        """
        hf = self.llm.kind == "llava_hf"
        fewshot = self.fewshot.weights if self.fewshot.backbone == "timm" else self.clip.weights
        comps = {
            "clip": self.clip.weights,
            "fewshot": fewshot,
            "sam": self.sam.weights,
            "llm": self.llm.weights,
            "llava vision tower": self.llm.weights if hf else None,
            "llava projector": self.llm.weights if hf else None,
        }
        out = {k: ("real: " + v if v else "random") for k, v in comps.items()}
        backbone = "real: " + fewshot if fewshot else "random"
        if self.sam.encoder == "fewshot_backbone":  # the offline stand-in (docs/profiles.md)
            out["sam"] = (f"stand-in: image encoder = the few-shot backbone ({backbone}), frozen, + a trained adapter; "
                          "prompt encoder and mask decoder trained from random")
        if self.llm.vision == "fewshot_backbone":
            out["llava vision tower"] = f"stand-in: the few-shot backbone's features ({backbone}), frozen"
            out["llava projector"] = "new, trained (backbone width to the language model's)"
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls: type, data: dict, where: str) -> Any:
    """Dataclass from a dict, rejecting unknown keys with a message naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}")
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def profile_from_dict(data: dict, where: str = "profile") -> Profile:
    return _build(Profile, data, where)


def load_profile(name_or_path: str | os.PathLike | None = None) -> Profile:
    """Load a profile by name (``tiny``, ``offline``, ``paper``) or from a JSON path.

    ``None`` means ``$SAMLLAVA_PROFILE`` or ``offline``.
    """
    name_or_path = name_or_path or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.json"))
        raise FileNotFoundError(f"profile {str(name_or_path)!r}: no file {path}; known profiles: {known}")
    with open(path) as f:
        return profile_from_dict(json.load(f), where=str(path))


def apply_overrides(profile: Profile, changes: dict[str, Any]) -> Profile:
    """Return a copy of ``profile`` with ``{"section.field": value}`` changes applied."""
    data = profile.to_dict()
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if p not in node or not isinstance(node[p], dict):
                raise KeyError(f"override {dotted!r}: no section {p!r}")
            node = node[p]
        if leaf not in node:
            raise KeyError(f"override {dotted!r}: no field {leaf!r}")
        node[leaf] = value
    return profile_from_dict(data, where=f"{profile.name} with overrides")
