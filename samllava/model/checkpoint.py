"""The checkpoint of a trained model: what the file holds, how it is written and read.

A checkpoint holds the trainable parts only (:meth:`SamLlava.trainable_state`: SAM's prompt encoder
and mask decoder with the multi-scale parts, SASA, LoRA), the optimiser state (packed: one torch file's bytes
in a uint8 tensor, :func:`optimizer_state` unpacks it), the epoch, the loss
history and the RNG state (so that :func:`samllava.train.end_to_end.train` resumes exactly), the names of the
profile and of the base language model, and the training answers (the describer's phrasebook: decoding
one image drafts from it, :mod:`samllava.describe.lookup_decode`, which changes its speed, not its
output). The frozen parts are rebuilt by :func:`samllava.model.sam_llava.build_model` from the profile (seeded),
so the file fully determines the model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import torch

from samllava.assets import weights
from samllava.core.config import LoraSettings, Profile
from samllava.describe.lora import adapter_pairs, fold_lora
from samllava.core.device import CPU, to_device
from samllava.model.sam_llava import SamLlava, build_model
from samllava.core.results import atomic_path

CHECKPOINT = "last.pt"  # the file name inside a training run's folder
DESCRIBER = "describer.model."  # the language model's names in a model without adapters ...
WRAPPED = DESCRIBER + "base_model.model."  # ... and where peft's wrapping (LoRA) puts them


def save_checkpoint(
    model: SamLlava, optimizer: torch.optim.Optimizer, epoch: int, history: list[dict], path: Path
) -> Path:
    """Write the trainable weights, optimiser and RNG state of ``epoch`` atomically to ``path``.

    Every tensor is written from the CPU, so the file is the same whichever device trained it and loads
    anywhere (:func:`load_checkpoint` moves the weights to the model's device, and the optimiser state
    to its parameters').
    """
    packed = io.BytesIO()
    torch.save(to_device(optimizer.state_dict(), CPU), packed)
    packed = torch.frombuffer(bytearray(packed.getbuffer()), dtype=torch.uint8)
    state = {"model": to_device(model.trainable_state(), CPU), "optimizer": packed, "epoch": epoch,
             "history": history, "rng": torch.get_rng_state(), "profile": model.profile.name,
             "base": model.describer.base_id, "phrasebook": list(model.describer.phrasebook)}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def read_checkpoint(model: SamLlava, path: str | Path) -> tuple[Path, dict]:
    """The file (``path`` or a training run's folder) and its contents, checked to be a checkpoint of
    ``model``'s base language model."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        # mmap: the tensors are read when used (inference never reads the optimiser state; docs/decisions.md)
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated or not a torch file
        raise ValueError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {e})") from None
    if state.get("base") != model.describer.base_id:
        raise ValueError(f"checkpoint {path} was trained on base model {state.get('base')!r}, "
                         f"this model is {model.describer.base_id!r}")
    return path, state


def load_checkpoint(model: SamLlava, path: str | Path, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load trained weights (and the optimiser state); clear errors for a file of another model.

    ``path`` is the file or the folder of a training run (then its :data:`CHECKPOINT`).
    """
    path, state = read_checkpoint(model, path)
    model.load_trainable_state(state["model"], source=str(path))
    model.describer.set_phrasebook(state.get("phrasebook", []))  # absent in checkpoints written before it
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state(state))
    return state


def optimizer_state(state: dict) -> dict:
    """The optimiser state of a checkpoint's contents. It is packed in one tensor so that reading a checkpoint
    for inference unpickles one record, not the optimiser's thousands of tensors (docs/decisions.md); a
    checkpoint written before the packing holds the dict itself."""
    packed = state["optimizer"]
    if isinstance(packed, dict):
        return packed
    return torch.load(io.BytesIO(packed.numpy().tobytes()), map_location="cpu", weights_only=True)


def load_model(profile: Profile, checkpoint: str | Path | None, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None) -> SamLlava:
    """A model for inference: trained weights from ``checkpoint``, or untrained (None), in eval mode, on
    ``device`` (:func:`samllava.core.device.resolve_device`) with the frozen towers in ``dtype``
    (:func:`build_model`). The model is built without LoRA and the checkpoint's adapters are folded into
    the language model's weights (:func:`samllava.describe.lora.fold_lora`: the same weights as
    :func:`samllava.describe.lora.merge_lora` gives, without peft's wrapping; its trainable names are
    then those of a model without adapters). Training starts from :func:`build_model` and
    :func:`load_checkpoint` instead."""
    model = build_model(profile, lora=False, device=device, dtype=dtype)
    if checkpoint is not None:
        path, state = read_checkpoint(model, checkpoint)
        adapters, rest = {}, {}
        for k, v in state["model"].items():
            if k.startswith(WRAPPED) and ".lora_" in k:
                adapters[k[len(WRAPPED):]] = v
            else:
                rest[k.replace(WRAPPED, DESCRIBER, 1)] = v
        model.load_trainable_state(rest, source=str(path))
        try:
            _fold_cached(model.describer.llava, adapters, profile.lora)
        except ValueError as e:
            raise ValueError(f"checkpoint {path}: {e}") from None
        model.describer.set_phrasebook(state.get("phrasebook", []))
    return model.eval()


def folded_cache_file(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], settings: LoraSettings,
                      base: dict[str, torch.Tensor]) -> Path:
    """Where the folded weights are kept: keyed by the adapters, the LoRA settings and the first row of each
    ``base`` weight before folding (another base model with the same name and shapes misses)."""
    digest = hashlib.sha256(repr(dataclasses.astuple(settings)).encode())
    for layer in sorted(pairs):
        for t in (*pairs[layer], base[f"{layer}.weight"][0]):
            digest.update(t.detach().float().contiguous().numpy().tobytes())
    return weights.cache_dir() / "folded" / f"{digest.hexdigest()[:24]}.pt"


def _fold_cached(llava: torch.nn.Module, adapters: dict[str, torch.Tensor], settings: LoraSettings) -> None:
    """:func:`fold_lora`, through a cache of the folded weights on the CPU. Writing into the language model's
    memory-mapped weights copies every page it touches; the cached weights are memory-mapped instead
    (docs/decisions.md). A cache file that cannot be read is rebuilt."""
    pairs = adapter_pairs(llava, adapters, settings)
    own = {f"{layer}.weight": llava.get_submodule(layer).weight for layer in pairs}
    if any(w.device != CPU for w in own.values()):  # on a GPU folding is quick: no cache
        fold_lora(llava, pairs, settings)
        return
    file = folded_cache_file(pairs, settings, own)
    if file.is_file():
        try:
            folded = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
        except Exception:  # truncated or foreign: fold again below
            folded = None
        if folded is not None and set(folded) == set(own) and all(
                folded[k].shape == w.shape and folded[k].dtype == w.dtype for k, w in own.items()):
            llava.load_state_dict(folded, strict=False, assign=True)  # assign: keeps the mapping, no copy
            return
    fold_lora(llava, pairs, settings)
    try:
        with atomic_path(file) as tmp:
            torch.save({k: w.detach() for k, w in own.items()}, tmp)
    except OSError:  # a cache folder that cannot be written: the next load folds again
        pass
