"""SAM of any size, composed from segment_anything's modules, and checked checkpoint loading.

Mirrors ``segment_anything.build_sam``: one public builder per size, each calling the private
:func:`_build` with every constant visible, and a plain registry dict. ``tiny`` keeps SAM's
structure (ViT encoder with windowed + global attention, prompt encoder, two-way transformer
decoder) at a size that runs in milliseconds on a CPU; its patch is 8 px so that a 64-px input
still gives an 8 x 8 embedding grid for the multi-scale branches (Sec. 3.2). Every size takes a
reduced encoder ``depth`` (``SamConfig.depth``): the same widths and key names, fewer blocks.

:func:`build_sam` loads official-format checkpoints (``sam_vit_h_4b8939.pth`` ...) with
``torch.load(weights_only=True)`` and compares every tensor shape with the architecture *before*
allocating it, so a vit_b file given to a vit_h profile fails at once with a message naming the
file, the first mismatching tensor and the size the file appears to be.
"""
from __future__ import annotations

import pickle
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from samllava.core.config import SamConfig
from samllava.sam.sdpa import use_sdpa

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # SAM's normalisation, on the 0-255 scale
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def _build(
    *,
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: tuple[int, ...],
    image_size: int,
    prompt_embed_dim: int,
    patch_size: int = 16,
    window_size: int = 14,
    mask_in_chans: int = 16,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
    iou_head_hidden_dim: int = 256,
) -> Sam:
    """Compose ``Sam(ImageEncoderViT, PromptEncoder, MaskDecoder)`` as ``_build_sam`` does.

    The image embedding is ``prompt_embed_dim x (image_size / patch_size)^2``; the mask prompt
    SAM expects is ``4x`` that side (256 x 256 for the official 1024-px models).
    """
    if image_size % patch_size:
        raise ValueError(f"SAM image_size {image_size} is not a multiple of the patch size {patch_size}")
    embedding_side = image_size // patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=encoder_depth,
            embed_dim=encoder_embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=encoder_num_heads,
            patch_size=patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=encoder_global_attn_indexes,
            window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(embedding_side, embedding_side),
            input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )
    use_sdpa(sam)  # same function and parameters, without the (B * heads, N, N) score matrices
    return sam.eval()


def global_blocks(depth: int) -> tuple[int, ...]:
    """Encoder blocks (0-based) with global attention: the last of each of up to four equal groups.

    Gives segment_anything's own indexes at the official depths ((7, 15, 23, 31) at 32 blocks, (5, 11, 17, 23)
    at 24, (2, 5, 8, 11) at 12) and keeps windowed blocks before a global one at a reduced depth ((1,) at 2).
    """
    if depth < 1:
        raise ValueError(f"SAM encoder depth must be at least 1, got {depth}")
    groups = max(1, min(4, depth // 2))
    return tuple(-(-(k + 1) * depth // groups) - 1 for k in range(groups))  # ceil((k + 1) * depth / groups) - 1


def build_sam_vit_h(image_size: int = 1024, depth: int = 32) -> Sam:
    return _build(encoder_embed_dim=1280, encoder_depth=depth, encoder_num_heads=16,
                  encoder_global_attn_indexes=global_blocks(depth), image_size=image_size, prompt_embed_dim=256)


def build_sam_vit_l(image_size: int = 1024, depth: int = 24) -> Sam:
    return _build(encoder_embed_dim=1024, encoder_depth=depth, encoder_num_heads=16,
                  encoder_global_attn_indexes=global_blocks(depth), image_size=image_size, prompt_embed_dim=256)


def build_sam_vit_b(image_size: int = 1024, depth: int = 12) -> Sam:
    return _build(encoder_embed_dim=768, encoder_depth=depth, encoder_num_heads=12,
                  encoder_global_attn_indexes=global_blocks(depth), image_size=image_size, prompt_embed_dim=256)


def build_sam_tiny(image_size: int = 64, depth: int = 2) -> Sam:
    """About 0.1M parameters: SAM's structure for tests and CI (random weights only)."""
    return _build(encoder_embed_dim=32, encoder_depth=depth, encoder_num_heads=2,
                  encoder_global_attn_indexes=global_blocks(depth), image_size=image_size, prompt_embed_dim=32,
                  patch_size=8, window_size=4, mask_in_chans=8, decoder_mlp_dim=64, decoder_num_heads=2,
                  iou_head_hidden_dim=32)


SAM_REGISTRY: dict[str, Callable[..., Sam]] = {
    "tiny": build_sam_tiny,
    "vit_b": build_sam_vit_b,
    "vit_l": build_sam_vit_l,
    "vit_h": build_sam_vit_h,
}

# segment_anything's official models are trained at 1024 px: a checkpoint is compared with
# every size at the profile's image side and at this one when guessing what a file is.
OFFICIAL_IMAGE_SIZE = 1024


def _depth_kwargs(depth: int | None) -> dict[str, int]:
    """A builder's keyword for ``depth`` (None: the size's own)."""
    return {} if depth is None else {"depth": depth}


@lru_cache(maxsize=None)
def _shapes(size: str, image_size: int, depth: int | None = None) -> dict[str, torch.Size]:
    """Parameter and buffer shapes of a SAM size (``depth`` blocks, None: its own), built on the meta device (no
    memory). Read-only."""
    with torch.device("meta"):
        model = SAM_REGISTRY[size](image_size=image_size, **_depth_kwargs(depth))
    return {k: v.shape for k, v in model.state_dict().items()}


def _fmt(shape: torch.Size) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _file_depth(state: dict[str, torch.Tensor]) -> int:
    """Encoder blocks in a checkpoint (``image_encoder.blocks.<i>.`` keys)."""
    blocks = {k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}
    return len(blocks)


def _guess(state: dict[str, torch.Tensor], image_size: int) -> str | None:
    """The registry size (and image side, and depth where not the size's own) whose shapes all match ``state``."""
    depth = _file_depth(state)
    for side in dict.fromkeys([image_size, OFFICIAL_IMAGE_SIZE]):
        for size in SAM_REGISTRY:
            for d in dict.fromkeys([None, depth or None]):
                shapes = _shapes(size, side, d)
                if shapes.keys() == state.keys() and all(shapes[k] == state[k].shape for k in shapes):
                    return f"sam_{size} (image_size {side}" + ("" if d is None else f", depth {d}") + ")"
    return None


def check_state_dict(state: object, cfg: SamConfig, source: str) -> None:
    """Raise ValueError unless ``state`` fits the SAM that ``cfg`` describes.

    Names ``source``, the expected size and the first mismatch, with a guess of what the file
    holds when it matches another registered size.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"SAM checkpoint {source}: expected a state dict of tensors (official format), "
                         f"got {type(state).__name__}")
    expected = _shapes(cfg.size, cfg.image_size, cfg.depth)
    where = f"{cfg.size} (image_size {cfg.image_size}" + ("" if cfg.depth is None else f", depth {cfg.depth}") + ")"
    problem = None
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    # The patch embedding first: its width tells the encoder size at a glance.
    for key in sorted(expected, key=lambda k: k != "image_encoder.patch_embed.proj.weight"):
        shape = expected[key]
        if key in state and state[key].shape != shape:
            problem = (f"{key} has shape {_fmt(state[key].shape)} but {where} expects {_fmt(shape)}")
            break
    if problem is None and missing:
        problem = f"{len(missing)} tensor(s) that {where} needs are missing (truncated?), e.g. {missing[:3]}"
    if problem is None and unexpected:
        problem = f"{len(unexpected)} tensor(s) unknown to {where}, e.g. {unexpected[:3]}"
    if problem is None:
        return
    guess = _guess(state, cfg.image_size)
    hint = f": is this {guess}?" if guess else ""
    raise ValueError(f"SAM checkpoint {source}: {problem}{hint}")


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SAM checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        raise ValueError(f"SAM checkpoint {path}: cannot be read ({type(e).__name__}: {e}); "
                         "a truncated download or not a torch state dict?") from e


def build_sam(cfg: SamConfig, checkpoint: Path | None = None) -> Sam:
    """The SAM of ``cfg.size`` at ``cfg.image_size`` (``cfg.depth`` encoder blocks), random or loaded from
    ``checkpoint``.

    Raises:
        ValueError: unknown size, an unreadable file, or a checkpoint of another size.
        FileNotFoundError: ``checkpoint`` does not exist.
    """
    if cfg.size not in SAM_REGISTRY:
        raise ValueError(f"unknown SAM size {cfg.size!r}; known: {sorted(SAM_REGISTRY)}")
    state = None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        check_state_dict(state, cfg, str(checkpoint))  # before allocating a 2.5 GB vit_h
    sam = SAM_REGISTRY[cfg.size](image_size=cfg.image_size, **_depth_kwargs(cfg.depth))
    if state is not None:
        sam.load_state_dict(state)
    return sam.eval()
