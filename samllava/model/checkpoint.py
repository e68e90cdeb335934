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

import io
from pathlib import Path

import torch

from samllava.core.config import Profile
from samllava.describe.lora import adapter_pairs, fold_lora
from samllava.core.device import CPU, resolve_device, to_device
from samllava.model import assembled
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
               dtype: str | torch.dtype | None = None, cache: bool = False) -> SamLlava:
    """A model for inference: trained weights from ``checkpoint``, or untrained (None), in eval mode, on
    ``device`` (:func:`samllava.core.device.resolve_device`) with the frozen towers in ``dtype``
    (:func:`build_model`). The model is built without LoRA and the checkpoint's adapters are folded into
    the language model's weights (:func:`samllava.describe.lora.fold_lora`: the same weights as
    :func:`samllava.describe.lora.merge_lora` gives, without peft's wrapping; its trainable names are
    then those of a model without adapters). Training starts from :func:`build_model` and
    :func:`load_checkpoint` instead.

    ``cache``: on the CPU (``dtype`` None), keep the model of a checkpoint on disk and read it back next time
    (:mod:`samllava.model.assembled`): for a command that loads one model per process."""
    file = None
    if cache and checkpoint is not None and dtype is None and resolve_device(device) == CPU:
        path = Path(checkpoint)
        file = assembled.cache_file(profile, path / CHECKPOINT if path.is_dir() else path)
        model = assembled.read(file, SamLlava)
        if model is not None:
            return model
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
        llava = model.describer.llava
        try:
            fold_lora(llava, adapter_pairs(llava, adapters, profile.lora), profile.lora)
        except ValueError as e:
            raise ValueError(f"checkpoint {path}: {e}") from None
        model.describer.set_phrasebook(state.get("phrasebook", []))
    model.eval()
    assembled.write(model, file)
    return model
