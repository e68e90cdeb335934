"""What the commands that run a model share: ``--device`` and ``--dtype`` read with errors that name them,
the data set of ``--data``, and the torchrun process group."""
from __future__ import annotations

import re

import torch

from samllava.cli.checks import option_error
from samllava.core import distributed
from samllava.core.device import parse_dtype, resolve_device
from samllava.data import CategoryData, load_dataset


def device_of(args) -> torch.device:
    """``--device`` as a torch device (checked: CUDA present, GPU index in range)."""
    try:
        return resolve_device(args.device)
    except ValueError as err:
        raise option_error("--device", args.device, _without_subject(err)) from None


def check_dtype(args) -> None:
    """``--dtype`` names a floating torch dtype (or is not given)."""
    if getattr(args, "dtype", None) is not None:
        try:
            parse_dtype(args.dtype)
        except ValueError as err:
            raise option_error("--dtype", args.dtype, _without_subject(err)) from None


def data_of(option: str, root) -> dict[str, CategoryData]:
    """The data set at ``root`` (MVTec layout or VisA), its layout checked before any model is built."""
    try:
        return load_dataset(root)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        raise option_error(option, root, err) from None


def in_process_group(run, args, device: torch.device) -> int:
    """``run(args, device)``, inside torchrun's process group when started under it."""
    started = distributed.init(device)
    try:
        return run(args, device)
    finally:
        if started:
            distributed.shutdown()


def _without_subject(err: Exception) -> str:
    """core.device's "device 'x': what" or "dtype 'x' is not what" without its subject (the option names it)."""
    return re.sub(r"^(device|dtype) '[^']*':? (is )?", "", str(err))
