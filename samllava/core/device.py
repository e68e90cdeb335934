"""Where the model runs and in which precision: one device setting, resolved here, honoured everywhere.

``device`` arguments across the package (:func:`samllava.model.sam_llava.build_model`, the evaluation methods, the
trainer's model, the pipeline helpers, ``samllava ... --device``, every notebook's ``device`` parameter) take
a name (``"cpu"``, ``"cuda"``, ``"cuda:1"``), a :class:`torch.device`, or None, and go through
:func:`resolve_device`: None (or ``"auto"``) means ``$SAMLLAVA_DEVICE`` when set, else CUDA when available,
else the CPU. Under ``torchrun`` a bare ``"cuda"`` is this process's GPU (``cuda:$LOCAL_RANK``).

Precision (:func:`tower_dtype`): on the CPU everything computes in float32. On a GPU the frozen towers take
the profile's dtypes: the language model and LLaVA's vision tower ``llm.dtype``, SAM's image encoder
``gpu.sam_dtype`` (bfloat16 in the paper profile, several times faster than float32: docs/gpu.md). CLIP and
every trainable part (SAM's prompt encoder and decoder, the multi-scale parts, SASA, LoRA) stay float32 on
every device: CLIP's maps are thresholded and ranked, and Adam wants float32 weights. Tensors move explicitly:
models are built on the CPU (the seeded random parts are then the same on every device) and moved once; inputs
are moved where they enter a model; cached per-image work (:class:`samllava.model.encoded_data.Examples`) is
kept on the CPU and moved batch by batch; checkpoints hold CPU tensors (:func:`to_device`), so a file written
on a GPU loads on a CPU and back.
"""
from __future__ import annotations

import dataclasses
import os

import torch

DEVICE_ENV = "SAMLLAVA_DEVICE"
AUTO = "auto"
CPU = torch.device("cpu")


def default_device() -> torch.device:
    """``$SAMLLAVA_DEVICE`` when set (and not "auto"), else CUDA when available, else the CPU."""
    name = os.environ.get(DEVICE_ENV, "").strip()
    if name and name != AUTO:
        return resolve_device(name)
    return torch.device("cuda") if torch.cuda.is_available() else CPU


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The :class:`torch.device` that ``device`` names (None or "auto": :func:`default_device`).

    A bare "cuda" becomes ``cuda:$LOCAL_RANK`` (torchrun's GPU of this process; ``cuda:0`` alone). Asking
    for CUDA where there is none is an error that says so, never a silent fall back to the CPU.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", AUTO)):
        dev = default_device()
    else:
        try:
            dev = torch.device(device.strip() if isinstance(device, str) else device)
        except RuntimeError as err:
            raise ValueError(f"device {device!r}: not a device name (cpu, cuda, cuda:1, auto): {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r}: CUDA is not available on this machine (use --device cpu or auto)")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``torch.bfloat16`` for "bfloat16" (or the dtype itself); a clear error for anything else."""
    if isinstance(name, torch.dtype):
        return name
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype {name!r} is not a torch floating dtype name (e.g. 'float32', 'bfloat16')")
    return dtype


def tower_dtype(profile_dtype: str, device: torch.device, override: str | torch.dtype | None = None) -> torch.dtype:
    """The dtype of a frozen tower's weights: ``override`` when given (any device), else float32 on the
    CPU (and on any device other than CUDA) and the profile's dtype on a GPU."""
    if override is not None:
        return parse_dtype(override)
    return parse_dtype(profile_dtype) if device.type == "cuda" else torch.float32


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module without any)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return CPU


def to_device(obj, device: str | torch.device, non_blocking: bool = False):
    """``obj`` with every tensor inside moved to ``device``: tensors, dataclasses (a copy with each field
    moved, e.g. :class:`samllava.model.sam_llava.Encoded`), lists, tuples and dicts (state dicts, optimiser state);
    anything else is returned as it is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        moved = {f.name: to_device(getattr(obj, f.name), device, non_blocking) for f in dataclasses.fields(obj)
                 if f.init}
        return dataclasses.replace(obj, **moved)
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device, non_blocking)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    if isinstance(obj, tuple):  # a named tuple
        return type(obj)(*(to_device(v, device, non_blocking) for v in obj))
    return obj


def describe(device: torch.device) -> str:
    """A short name of the device for reports: "cpu", or "cuda:0 (<GPU name>, <memory> GiB)"."""
    if device.type != "cuda":
        return str(device)
    props = torch.cuda.get_device_properties(device)
    return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
