"""Few-shot support sampling: reproducible, indices into the sorted train/good list."""
import random
from pathlib import Path

import numpy as np
import pytest

from samllava.data import FEWSHOT_SEEDS, CategoryData, Sample, sample_support, support_indices


def _category(n: int, shuffle: bool = False) -> CategoryData:
    train = [Sample(Path(f"/d/c/train/good/{i:03d}.png"), "c", "train", 0, "good", None) for i in range(n)]
    if shuffle:
        random.Random(0).shuffle(train)
    return CategoryData("c", Path("/d/c"), train, [], has_masks=True)


def test_indices_are_numpy_generator_draws():
    for seed in FEWSHOT_SEEDS:
        expected = np.random.default_rng(seed).permutation(10)[:4]
        assert support_indices(10, 4, seed).tolist() == expected.tolist()
    assert FEWSHOT_SEEDS == (0, 1, 2, 3, 4)


def test_support_is_reproducible_and_refers_to_sorted_names():
    data = _category(10)
    for seed in FEWSHOT_SEEDS:
        for k in (1, 2, 4):
            a, b = sample_support(data, k, seed), sample_support(data, k, seed)
            assert a == b and len(set(a)) == k
            assert [int(s.image_path.stem) for s in a] == support_indices(10, k, seed).tolist()
    # The loader's order does not matter: indices mean positions in the name-sorted list.
    assert sample_support(_category(10, shuffle=True), 4, 2) == sample_support(data, 4, 2)


def test_more_shots_extend_fewer_and_seeds_differ():
    data = _category(12)
    for seed in FEWSHOT_SEEDS:
        assert sample_support(data, 4, seed)[:2] == sample_support(data, 2, seed)
        assert sample_support(data, 2, seed)[:1] == sample_support(data, 1, seed)
    runs = {tuple(s.image_path.name for s in sample_support(data, 4, seed)) for seed in FEWSHOT_SEEDS}
    assert len(runs) > 1


def test_errors_name_the_category():
    with pytest.raises(ValueError, match=r"'c'.*k=5.*only 4"):
        sample_support(_category(4), 5, 0)
    with pytest.raises(ValueError, match=r"'c'.*no normal training images"):
        sample_support(_category(0), 1, 0)
    with pytest.raises(ValueError, match="positive"):
        support_indices(4, 0, 0)


def test_on_a_loaded_miniature(mvtec_root):
    from samllava.data import load_mvtec

    bottle = load_mvtec(mvtec_root, ["bottle"])["bottle"]
    support = sample_support(bottle, 2, 1)
    assert all(s.split == "train" and s.label == 0 for s in support)
    assert [bottle.train.index(s) for s in support] == support_indices(len(bottle.train), 2, 1).tolist()
