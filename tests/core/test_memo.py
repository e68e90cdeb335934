"""ContentMemo: one call per distinct input content, bounded."""
import torch

from samllava.core.memo import ContentMemo


def test_memo_by_content_and_bounded():
    calls = []
    memo = ContentMemo(lambda x: calls.append(1) or x.sum(), max_batches=2)
    a = torch.arange(6.0).reshape(2, 3)
    assert memo(a) == 15 and memo(a.clone()) == 15  # equal content, another tensor: a hit
    assert (memo.hits, memo.misses) == (1, 1)
    memo(a + 1)
    memo(a.double())  # same values, another dtype: another entry
    assert memo.misses == 3 and len(calls) == 3
    memo(a)  # evicted (least recently used) once the third entry came in
    assert memo.misses == 4
