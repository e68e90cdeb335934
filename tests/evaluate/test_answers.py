"""samllava.evaluate.answers: answering batches that span categories gives what answering each image alone gives."""
import pytest
import torch

from samllava.evaluate.answers import _spans, answer
from samllava.core.config import load_profile
from samllava.data import generate_synthetic, load_dataset
from samllava.model.encoded_data import prepare
from samllava.model.sam_llava import build_model


def test_spans_cover_the_rows_in_order_one_span_per_category():
    examples = [list(range(3)), list(range(2)), list(range(4))]  # lengths 3, 2, 4: rows 0-8 end to end
    spans = lambda a, b: [(examples.index(ex), i, j) for ex, i, j in _spans(examples, a, b)]  # noqa: E731
    assert spans(0, 9) == [(0, 0, 3), (1, 0, 2), (2, 0, 4)]
    assert spans(2, 6) == [(0, 2, 3), (1, 0, 2), (2, 0, 1)]
    assert spans(3, 5) == [(1, 0, 2)]
    assert spans(5, 5) == []


@pytest.fixture(scope="module")
def model_and_examples(tmp_path_factory):
    root = generate_synthetic(tmp_path_factory.mktemp("syn"), categories=["fabric", "bottle_cap"], n_train=2, n_test=3,
                              size=64, seed=1)
    data = load_dataset(root)
    torch.manual_seed(0)
    model = build_model(load_profile("tiny"), device="cpu")
    return model, prepare(model, data, 64, shots=1, progress=False)


@pytest.mark.parametrize("batch_size", [2, 4, 32])
def test_batches_across_categories_answer_as_one_image_at_a_time(model_and_examples, batch_size):
    """Batches of 2 and 4 cut through both categories (3 images each), 32 holds all six: every image must get
    the answer it gets alone (left padding and each category's own text features and M_fine)."""
    model, examples = model_and_examples
    alone = answer(model, examples, batch_size=1, max_new_tokens=4, progress=False)
    together = answer(model, examples, batch_size=batch_size, max_new_tokens=4, progress=False)
    assert [len(t) for t in together] == [len(ex) for ex in examples] == [3, 3]
    assert together == alone
    assert all(isinstance(t, str) for ts in together for t in ts)
