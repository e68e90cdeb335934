"""Memory-aware batch sizes (samllava.core.batching) with fake memory counters: no GPU needed."""
import pytest
import torch

from samllava.core.batching import BatchSizer, fitting_batch

GB = 2**30


def test_fitting_batch_from_free_memory():
    # SAM ViT-H at 1024 px, ~0.7 GB per image: a 24 GB card with 16 GB taken by the 7B model, an 80 GB card
    assert fitting_batch(8 * GB, int(0.7 * GB), cap=32) == 10
    assert fitting_batch(64 * GB, int(0.7 * GB), cap=32) == 32  # capped
    assert fitting_batch(int(0.5 * GB), int(0.7 * GB), cap=8) == 1  # one item is always tried
    assert fitting_batch(8 * GB, 0, cap=16) == 16  # nothing measurable per item
    assert fitting_batch(10, 1, cap=100, fraction=0.5) == 5
    with pytest.raises(ValueError, match="cap"):
        fitting_batch(GB, 1, cap=0)
    with pytest.raises(ValueError, match="fraction"):
        fitting_batch(GB, 1, cap=4, fraction=1.5)


class FakeMemory:
    """``free`` bytes free; each call of the work costs ``per_item`` per item; batches above ``oom_above`` fail."""

    def __init__(self, free, per_item, oom_above=None):
        self.free, self.per_item, self.oom_above = free, per_item, oom_above
        self.peak, self.released = 0, 0

    def start(self):
        self.peak = 0

    def peak_bytes(self):
        return self.peak

    def free_bytes(self):
        return self.free

    def release(self):
        self.released += 1

    def work(self, i, j):
        if self.oom_above is not None and j - i > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        self.peak = max(self.peak, (j - i) * self.per_item)
        return list(range(i, j))


def test_cpu_batches_are_the_cap_whatever_the_settings():
    sizer = BatchSizer("cpu", cap=4, setting=2)
    calls = []
    out = sizer.run(10, lambda i, j: calls.append((i, j)) or (i, j))
    assert calls == out == [(0, 4), (4, 8), (8, 10)]


def test_first_batch_measures_one_item_then_batches_fill_free_memory():
    mem = FakeMemory(free=10 * GB, per_item=GB)
    sizer = BatchSizer("cpu", cap=8, probe=mem)  # a probe makes the sizer measure (as on CUDA)
    sizes = [len(b) for b in sizer.run(20, mem.work)]
    assert sizes == [1, 8, 8, 3] and sizer.item_bytes == GB and sizer.size == 8
    mem2 = FakeMemory(free=5 * GB, per_item=GB)
    sizer2 = BatchSizer("cpu", cap=8, probe=mem2)
    assert [len(b) for b in sizer2.run(10, mem2.work)] == [1, 4, 4, 1]  # int(0.9 * 5)
    assert [len(b) for b in sizer2.run(6, mem2.work)] == [4, 2]  # the size is kept for later calls


def test_a_setting_fixes_the_gpu_batch():
    mem = FakeMemory(free=100 * GB, per_item=GB)
    assert [len(b) for b in BatchSizer("cpu", cap=8, setting=3, probe=mem).run(7, mem.work)] == [3, 3, 1]


def test_out_of_memory_halves_the_batch_and_runs_it_again():
    mem = FakeMemory(free=100 * GB, per_item=GB, oom_above=2)  # the estimate says 8, the device takes 2
    sizer = BatchSizer("cpu", cap=8, probe=mem)
    out = sizer.run(12, mem.work)
    assert [x for b in out for x in b] == list(range(12)) and sizer.size == 2 and mem.released == 2
    with pytest.raises(torch.cuda.OutOfMemoryError):
        BatchSizer("cpu", cap=8, probe=FakeMemory(GB, GB, oom_above=0)).run(3, FakeMemory(GB, GB, oom_above=0).work)
    no_retry = BatchSizer("cpu", cap=8, setting=8, probe=FakeMemory(GB, GB))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        no_retry.run(8, FakeMemory(GB, GB, oom_above=4).work, retry=False)
    assert no_retry.size == 4  # halved for the caller's next attempt


def test_other_errors_are_never_taken_for_memory():
    def boom(i, j):
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        BatchSizer("cpu", cap=4, setting=4, probe=FakeMemory(GB, 1)).run(8, boom)
