"""Batch sizes chosen from free GPU memory, so that a 24 GB card and an 80 GB card both run the paper profile.

:func:`fitting_batch` is the rule, a pure function: the largest batch (at most ``cap``) whose items, at
``item_bytes`` each, fit in a share of the free memory. :class:`BatchSizer` applies it where batches are
formed (the frozen encoders in :func:`samllava.model.encoded_data.prepare` and in evaluation, the language model in
:mod:`samllava.evaluate.answers`, the training micro-batches of :mod:`samllava.train.end_to_end`):

* on the CPU (any device but CUDA) the batch is always ``cap``, the code's own batch size, so CPU runs are
  exactly what they were;
* on a GPU with a fixed ``setting`` (the profile's ``gpu`` section, or a command-line option) that size;
* otherwise the first batch holds one item and its peak memory above what was allocated before it is
  measured: that is the per-item estimate (a fixed overhead counted with it errs towards smaller batches).
  The rest are :func:`fitting_batch` of the free memory at that moment. A batch that still runs out of memory
  is halved and run again (one item that does not fit is an error).

The per-item memory of each stage at the paper's sizes is in results/gpu_bench.json and docs/gpu.md: a
24 GB card trains with micro-batches of one image (gradients accumulated to ``train.batch_size``), a
larger card with larger micro-batches.
"""
from __future__ import annotations

from typing import Callable, Protocol, TypeVar

import torch

T = TypeVar("T")
MEMORY_FRACTION = 0.9  # share of the free memory that a batch may fill (the rest: fragmentation, other tensors)


def fitting_batch(free_bytes: int, item_bytes: int, cap: int, fraction: float = MEMORY_FRACTION) -> int:
    """The largest batch of at most ``cap`` items of ``item_bytes`` each within ``fraction * free_bytes``;
    at least 1 (one item is always tried), ``cap`` when an item costs nothing measurable."""
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if item_bytes <= 0:
        return cap
    return max(1, min(cap, int(free_bytes * fraction) // int(item_bytes)))


class MemoryProbe(Protocol):
    """What :class:`BatchSizer` reads of a device's memory (a fake one in the tests)."""

    def start(self) -> None:
        """Begin measuring: the peak is counted from here."""

    def peak_bytes(self) -> int:
        """Bytes allocated at the peak since :meth:`start`, above what was allocated at :meth:`start`."""

    def free_bytes(self) -> int:
        """Bytes a new allocation may still take."""

    def release(self) -> None:
        """Return cached blocks after an out-of-memory error."""


class CudaMemory:
    """:class:`MemoryProbe` of one CUDA device (the caching allocator's counters)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._base = 0

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = torch.cuda.memory_allocated(self.device)

    def peak_bytes(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self._base

    def free_bytes(self) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        # blocks the caching allocator holds but no tensor uses are free for this process too
        return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)

    def release(self) -> None:
        torch.cuda.empty_cache()


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError)


class BatchSizer:
    """Batch sizes for one kind of work on one device (see the module docstring).

    Args:
        device: where the work runs; only CUDA devices are measured.
        cap: the largest batch (the code's batch size, used as it is off CUDA).
        setting: a fixed batch size on a GPU (None: from free memory).
        fraction: share of the free memory a batch may fill.
        probe: the memory counters (default: :class:`CudaMemory` of ``device``).
    """

    def __init__(self, device: torch.device | str, cap: int, setting: int | None = None,
                 fraction: float = MEMORY_FRACTION, probe: MemoryProbe | None = None) -> None:
        self.device = torch.device(device)
        self.cap, self.fraction = cap, fraction
        self.measured = self.device.type == "cuda" or probe is not None
        self.size: int | None = cap if not self.measured else setting
        self.probe = probe if probe is not None or not self.measured else CudaMemory(self.device)
        self.item_bytes: int | None = None

    def run(self, n: int, fn: Callable[[int, int], T], retry: bool = True) -> list[T]:
        """``[fn(start, stop) for each batch]`` over ``range(n)`` in order, batch sizes as described above.

        ``retry`` False: an out-of-memory error propagates (the next call uses half the batch), for work
        that cannot simply be run again from the failed batch (a training step accumulating gradients).
        """
        out: list[T] = []
        start = 0
        while start < n:
            size = 1 if self.size is None else self.size
            stop = min(n, start + size)
            try:
                if self.size is None:  # the first batch on a GPU: one item, measured
                    self.probe.start()
                    out.append(fn(start, stop))
                    self.item_bytes = self.probe.peak_bytes()
                    self.size = fitting_batch(self.probe.free_bytes(), self.item_bytes, self.cap, self.fraction)
                else:
                    out.append(fn(start, stop))
            except Exception as err:  # noqa: BLE001 - only an out-of-memory error is handled, the rest re-raised
                if not (self.measured and is_out_of_memory(err)) or stop - start == 1:
                    raise
                self.probe.release()
                self.size = max(1, (stop - start) // 2)
                if not retry:
                    raise
                continue
            start = stop
        return out
