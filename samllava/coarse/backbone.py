"""Frozen multi-level feature extractors for the few-shot memory (Sec. 3.1, Eq. 2).

A :class:`FeatureExtractor` maps images (B, 3, S, S) in [0, 1] to a list of per-level feature
maps (B, C_l, h_l, w_l). Two implementations, chosen by ``FewShotConfig.backbone``:

* :class:`ClipBlockExtractor` - patch tokens of 1-based CLIP blocks (the paper: 3, 8, 12),
  reshaped to the patch grid; CLIP (OpenAI) normalisation.
* :class:`TimmExtractor` - the feature stages of a timm CNN (``features_only=True``);
  ImageNet normalisation. The offline profile loads the packaged ImageNet EfficientNet-Lite0
  state dict, whose keys map one-to-one *in order* onto timm's ``efficientnet_lite0``
  (:func:`map_state_dict_by_order` checks every shape and parameter kind).

The modules never touch files: :func:`build_feature_extractor` does the I/O.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from samllava.core.config import FewShotConfig
from samllava.core.memo import ContentMemo
from samllava.coarse.clip_model import CheckpointError, read_state_dict


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Raise ValueError unless ``images`` is a float (B, 3, S, S) batch with B >= 1 in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"{name} must be (B, 3, S, S), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:  # catches 0-255 images and already-normalised ones
        raise ValueError(f"{name} must lie in [0, 1] (the loaders' range), got values in [{lo:.3g}, {hi:.3g}]")


def check_layers(layers: Sequence[int], num_layers: int, what: str) -> list[int]:
    """0-based indices of strictly increasing 1-based ``layers`` within ``1..num_layers``."""
    layers = list(layers)
    if not layers or any(not 1 <= i <= num_layers for i in layers) or layers != sorted(set(layers)):
        raise ValueError(f"{what}: layers {layers} must be strictly increasing 1-based indices in 1..{num_layers}")
    return [i - 1 for i in layers]


class ImagePreprocess(nn.Module):
    """Resize (B, 3, S, S) in [0, 1] to ``size`` and normalise with ``mean``/``std``."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        images = images.to(self.mean.device)  # images enter the tower where the tower is
        if images.shape[-1] != self.size:
            images = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear", align_corners=False,
                                   antialias=True).to(images.dtype)  # antialias has no bf16 CPU kernel
        return (images - self.mean) / self.std


def clip_block_tokens(visual: nn.Module, x: torch.Tensor, indices: list[int], pooled: bool = False
                      ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Patch tokens (B, N, W) of the 0-based blocks ``indices`` of an open_clip ViT, class token dropped.

    With ``pooled=True`` also the image embedding (B, D) of the same pass: the class token
    through the final LayerNorm and projection, i.e. exactly ``model.encode_image``.
    Tokens are cloned: peers got identical "intermediate" features from views of one buffer.
    """
    out = visual.forward_intermediates(x, indices=indices, output_fmt="NLC", intermediates_only=not pooled)
    tokens = [t.clone() for t in out["image_intermediates"]]  # (B, N, W) each, block order
    return tokens, (out["image_features"] if pooled else None)


class FeatureExtractor(nn.Module):
    """Interface: ``forward(images (B, 3, S, S) in [0, 1]) -> [(B, C_l, h_l, w_l), ...]``.

    Frozen: parameters never require grad and the module stays in eval mode (batch-norm
    statistics of a pretrained backbone must not drift when a parent calls ``.train()``).
    """

    label: str = "feature extractor"

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.preprocess = ImagePreprocess(size, mean, std)

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-level maps of normalised, resized images ``x`` (B, 3, size, size)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.extract(self.preprocess(images))

    @property
    def device(self) -> torch.device:
        """Where the extractor's weights are (its buffers' device for one without weights; else the CPU)."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.train(False)


class ClipBlockExtractor(FeatureExtractor):
    """Patch tokens of CLIP blocks ``layers`` (1-based) as (B, W, g, g) grids."""

    def __init__(self, visual: nn.Module, layers: Sequence[int], image_size: int) -> None:
        super().__init__(image_size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
        self.visual = visual
        self.indices = check_layers(layers, len(visual.transformer.resblocks), "few-shot CLIP backbone")
        self.grid = visual.grid_size
        expected = image_size // visual.patch_size[0]
        if tuple(self.grid) != (expected, expected):
            raise ValueError(f"few-shot CLIP backbone: visual tower built for a {tuple(self.grid)} grid, "
                             f"but image_size {image_size} gives {expected}x{expected}; build CLIP at this side")
        self.label = f"CLIP blocks {tuple(layers)}"
        self._freeze()

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens, _ = clip_block_tokens(self.visual, x, self.indices)
        b, (h, w) = x.shape[0], self.grid
        return [t.transpose(1, 2).reshape(b, -1, h, w) for t in tokens]  # (B, W, h, w)


class TimmExtractor(FeatureExtractor):
    """Feature stages of a timm ``features_only`` model."""

    def __init__(self, model: nn.Module, image_size: int, label: str = "timm") -> None:
        super().__init__(image_size, IMAGENET_MEAN, IMAGENET_STD)
        # channels-last convolutions: oneDNN's direct kernels, about 1.8x faster on a 2-core CPU than the
        # default layout for EfficientNet-Lite0 (docs/decisions.md); loading weights into the
        # model later keeps the layout (copy_ keeps the destination's strides)
        self.model = model.to(memory_format=torch.channels_last)
        self.label = label
        self._freeze()

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.model(x.contiguous(memory_format=torch.channels_last))
        return [f.contiguous() for f in feats]  # the usual (B, C, h, w) layout for what follows


def map_state_dict_by_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                            source_name: str) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    Every pair must agree in shape and in parameter kind (the last key component:
    ``weight``, ``bias``, ``running_mean``, ...), so a shifted or foreign checkpoint fails.

    Raises:
        CheckpointError: different counts, or the first pair that disagrees, named.
    """
    if len(source) != len(target):
        raise CheckpointError(f"{source_name}: {len(source)} tensors, but the architecture has {len(target)}")
    mapped = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(source.items(), target.items())):
        if tuple(sv.shape) != tuple(tv.shape) or sk.rsplit(".", 1)[-1] != tk.rsplit(".", 1)[-1]:
            raise CheckpointError(f"{source_name}: tensor #{i} {sk!r} {tuple(sv.shape)} does not match "
                                  f"the architecture's {tk!r} {tuple(tv.shape)}")
        mapped[tk] = sv
    return mapped


def load_timm_features(timm_name: str, layers: Sequence[int], state: Mapping[str, torch.Tensor] | None,
                       source_name: str = "state dict") -> nn.Module:
    """timm ``features_only`` model with stages ``layers``, weights mapped from a full-model state dict.

    ``state`` holds the full classifier's tensors in timm's order (any key names); the
    feature model takes the subset it has (the classifier head is dropped).
    """
    model = timm.create_model(timm_name, features_only=True, out_indices=tuple(layers), pretrained=False)
    if state is not None:
        reference = timm.create_model(timm_name, pretrained=False).state_dict()
        mapped = map_state_dict_by_order(state, reference, source_name)
        own = model.state_dict()
        missing = [k for k in own if k not in mapped]
        if missing:
            raise CheckpointError(f"{source_name}: no tensors for {missing[:5]} of the feature model {timm_name}")
        model.load_state_dict({k: mapped[k] for k in own}, strict=True)
    return model


def build_feature_extractor(
    cfg: FewShotConfig, clip_visual: nn.Module | None, weights_path: Path | None
) -> FeatureExtractor:
    """The few-shot backbone of ``cfg`` (I/O: reads ``weights_path`` for ``backbone="timm"``)."""
    if cfg.backbone == "clip":
        if clip_visual is None:
            raise ValueError("few-shot backbone 'clip' needs the CLIP visual tower")
        return ClipBlockExtractor(clip_visual, cfg.layers, cfg.image_size)
    if cfg.backbone == "timm":
        if not cfg.timm_name:
            raise ValueError("few-shot backbone 'timm' needs fewshot.timm_name (e.g. 'efficientnet_lite0')")
        state = read_state_dict(Path(weights_path), "few-shot backbone weights") if weights_path is not None else None
        model = load_timm_features(cfg.timm_name, cfg.layers, state, source_name=str(weights_path))
        weights = "pretrained" if state is not None else "random weights"
        return TimmExtractor(
            model, cfg.image_size, label=f"timm {cfg.timm_name} stages {tuple(cfg.layers)} ({weights})"
        )
    raise ValueError(f"fewshot.backbone {cfg.backbone!r}: expected 'clip' or 'timm'")


def pooled_tokens(maps: list[torch.Tensor], grid: int) -> torch.Tensor:
    """Per-level maps [(B, C_l, h_l, w_l)] average-pooled to ``grid x grid`` and stacked along channels:
    (B, grid * grid, sum C_l) tokens, row-major."""
    pooled = torch.cat([F.adaptive_avg_pool2d(m.float(), grid) for m in maps], dim=1)  # (B, C, g, g)
    return pooled.flatten(2).transpose(1, 2).to(maps[0].dtype)


class CachedExtractor(FeatureExtractor):
    """Memoises another extractor's features by image content (:class:`samllava.core.memo.ContentMemo`).

    An evaluation over several support seeds and shot counts runs the backbone on the same query
    images again and again; with this wrapper each query batch is encoded once. Bounded by
    ``max_batches`` (least recently used dropped first).
    """

    def __init__(self, inner: FeatureExtractor, max_batches: int = 256) -> None:
        nn.Module.__init__(self)
        self.inner = inner
        self.label = inner.label
        self.memo = ContentMemo(inner, max_batches)

    @property
    def hits(self) -> int:
        return self.memo.hits

    @property
    def misses(self) -> int:
        return self.memo.misses

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.memo(images)
