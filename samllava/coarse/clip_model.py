"""Build the frozen open_clip model of the coarse stage (Sec. 3.1) from a :class:`ClipConfig`.

I/O lives here, never in the modules: an inline architecture (``cfg.model_config``) is
registered with open_clip through a JSON file named ``<cfg.model_name>.json``; weights are read
with ``torch.load(..., weights_only=True)`` (no pickled code runs) and any failure is re-raised
naming the file and what mismatched.
"""
from __future__ import annotations

import json
import logging
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import open_clip
import torch
from open_clip.model import resize_pos_embed
from torch import nn

from samllava.core.config import ClipConfig


class CheckpointError(ValueError):
    """A weights file that cannot be read or does not fit the architecture."""


_INLINE_NAMES: set[str] = set()  # architectures this module registered (profiles may redefine them)


def register_model_config(name: str, model_config: dict) -> None:
    """Register an inline open_clip architecture under ``name`` (open_clip reads JSON files).

    A name registered here before is replaced (the tiny and offline profiles share a name with
    different sizes); an architecture shipped with open_clip never is.

    Raises:
        ValueError: ``model_config`` lacks open_clip's required keys, or ``name`` is a different
            built-in open_clip architecture.
    """
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_config]
    if missing:
        raise ValueError(
            f"clip.model_config for {name!r} lacks {missing}; open_clip needs embed_dim, vision_cfg, text_cfg"
        )
    model_config = json.loads(json.dumps(model_config))  # the form open_clip will hold (tuples -> lists)
    existing = open_clip.get_model_config(name)
    if existing == model_config:
        return
    if existing is not None and name not in _INLINE_NAMES:
        raise ValueError(
            f"clip.model_name {name!r} is a built-in open_clip architecture with a different config; "
            "give the inline model_config its own name"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(model_config))
        # open_clip copies the parsed config into its registry; the file is not needed afterwards.
        open_clip.add_model_config(path)
    if open_clip.get_model_config(name) != model_config:
        raise ValueError(f"open_clip did not register the inline config {name!r}")
    _INLINE_NAMES.add(name)


def read_state_dict(path: Path, what: str = "CLIP weights") -> dict[str, torch.Tensor]:
    """State dict of a checkpoint file, loaded with ``weights_only=True``.

    Unwraps ``{"state_dict": ...}`` and DistributedDataParallel's ``module.`` prefix.
    ``what`` names the file's role in error messages.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(
            f"{what} {path}: cannot be read (truncated or not a weights_only-safe torch file): {e}"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # training checkpoints wrap the weights
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{what} {path}: expected a state dict of tensors, got {type(obj).__name__}")
    if next(iter(obj)).startswith("module."):  # saved from DistributedDataParallel
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def load_clip_weights(model: nn.Module, path: Path) -> None:
    """Load an open_clip checkpoint into ``model`` strictly.

    The positional embedding is resized when the model was built at another input side
    (``force_image_size=240`` with 224-px weights, as WinCLIP does).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable file, or keys/shapes that do not match the architecture.
    """
    state = read_state_dict(Path(path), "CLIP weights")
    try:
        resize_pos_embed(state, model)  # in place; a no-op when the grids already agree
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"CLIP weights {path} do not match the architecture: {e}") from e


def architecture_name(cfg: ClipConfig) -> str:
    """The open_clip name that builds ``cfg``'s architecture, registering it first where needed.

    ``cfg.model_config`` registers an inline architecture under ``cfg.model_name``; ``cfg.depth`` registers
    ``<model_name>-<depth>blocks``: the same architecture (widths, heads, patch, input side) with ``depth``
    blocks in both towers. The file format of the weights is the architecture's own, fewer blocks' keys.

    Raises:
        ValueError: an unknown architecture name, or a depth below 1.
    """
    base = cfg.model_config if cfg.model_config is not None else open_clip.get_model_config(cfg.model_name)
    if base is None:
        raise ValueError(f"unknown open_clip architecture {cfg.model_name!r}; known: {open_clip.list_models()}")
    if cfg.depth is None:
        if cfg.model_config is not None:
            register_model_config(cfg.model_name, cfg.model_config)
        return cfg.model_name
    if cfg.depth < 1:
        raise ValueError(f"clip.depth must be at least 1 (or null: the architecture's own), got {cfg.depth}")
    reduced = json.loads(json.dumps(base))  # a deep copy: open_clip's registry keeps the original
    reduced["vision_cfg"]["layers"] = reduced["text_cfg"]["layers"] = cfg.depth
    name = f"{cfg.model_name}-{cfg.depth}blocks"
    register_model_config(name, reduced)
    return name


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def build_clip(cfg: ClipConfig, weights_path: Path | None) -> tuple[nn.Module, Callable]:
    """The open_clip model (eval mode, frozen) and its tokenizer.

    Args:
        cfg: architecture name or inline config, depth (:func:`architecture_name`), input side (``force_image_size``).
        weights_path: an open_clip checkpoint, or None for random initialisation.
    """
    name = architecture_name(cfg)
    # Weights are loaded below (not through `pretrained=`) so that a bad file gets our message;
    # open_clip's "initialized randomly" warning would then be false, so it is dropped.
    quiet = _DropRandomInitWarning() if weights_path is not None else None
    root = logging.getLogger()
    if quiet:
        root.addFilter(quiet)
    try:
        model = open_clip.create_model(name, pretrained=None, force_image_size=cfg.image_size)
    finally:
        if quiet:
            root.removeFilter(quiet)
    if weights_path is not None:
        load_clip_weights(model, Path(weights_path))
    model.eval().requires_grad_(False)  # frozen encoders (Sec. 3.1)
    tokenizer = open_clip.get_tokenizer(name)
    return model, tokenizer
