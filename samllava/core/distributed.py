"""Several processes (``torchrun``): the process group, DistributedDataParallel, sharded evaluation.

One process per device: ``torchrun --nproc-per-node N -m samllava train ...`` (or ``samllava evaluate``).
:func:`init` starts the process group from torchrun's environment with NCCL on CUDA and gloo on the CPU;
:func:`world` says (rank, world size), (0, 1) without torchrun.

Training (:mod:`samllava.train.end_to_end`) wraps the model in :func:`data_parallel`: PyTorch's
DistributedDataParallel, whose gradient all-reduce is bucketed and overlapped with the backward pass,
over the trainable parts only (the frozen towers are identical on every rank by construction, so they
are neither broadcast nor reduced). Evaluation (:func:`samllava.evaluate.harness.evaluate`) shards the images
(:func:`shard`: image i goes to rank i mod world) and collects every rank's outputs on rank 0
(:func:`gather`), which scores them exactly as one process would.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init(device: torch.device, timeout_s: float = 1800) -> bool:
    """Start the process group of a torchrun launch (no-op otherwise or when already started).

    Returns whether this call started it (the caller then calls :func:`shutdown`). On CUDA the process's
    GPU (``device``, from :func:`samllava.core.device.resolve_device`) becomes the current one, as NCCL needs.
    """
    if not launched() or dist.is_initialized():
        return False
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend_for(device), timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def shard(n: int, rank: int, world_size: int) -> list[int]:
    """Indices ``i < n`` with ``i % world_size == rank``: the images rank ``rank`` scores."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return list(range(rank, n, world_size))


def unshard(parts: list[list[T]], n: int) -> list[T]:
    """Items of :func:`shard`'s parts (part r holds items r, r + world, ...) back in index order."""
    world_size = len(parts)
    out: list[T] = [None] * n  # type: ignore[list-item]
    for r, part in enumerate(parts):
        idx = shard(n, r, world_size)
        if len(part) != len(idx):
            raise ValueError(f"rank {r} returned {len(part)} items for {len(idx)} indices")
        for i, item in zip(idx, part):
            out[i] = item
    return out


def gather(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (None elsewhere); ``[obj]`` in a single process.

    Objects travel pickled (``gather_object``): tensors in them should be on the CPU."""
    rank, world_size = world()
    if world_size == 1:
        return [obj]
    out = [None] * world_size if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (itself in a single process)."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (in place); ``t`` itself in a single process."""
    if world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def data_parallel(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` in DistributedDataParallel over its trainable parameters only.

    The frozen parameters and every buffer are left out of DDP's start-up broadcast and of its
    reductions: they are the same on every rank (loaded weights, or random parts seeded by
    :mod:`samllava.core.seeding`), and the frozen 7B language model would otherwise be broadcast at start.
    ``find_unused_parameters``: SAM's IoU head chooses the kept mask by ``argmax``, so it gets no
    gradient, nor do the prompt embeddings the profile's prompt type does not use.
    """
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    frozen += [n for n, _ in model.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)
    device = torch.device(device)
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                   broadcast_buffers=False, find_unused_parameters=True)
