"""Prompt-lookup greedy decoding: the draft rule by hand, and the tokens of ``generate`` (tiny describer)."""
import numpy as np
import pytest
import torch

from samllava.core.config import load_profile
from samllava.describe import lookup_decode
from samllava.describe.build import build_describer
from samllava.describe.lookup_decode import draft


def test_draft_continues_the_latest_occurrence_of_the_longest_tail():
    #          0  1  2  3  4  5  6  7  8  9  10
    history = [5, 6, 7, 8, 9, 6, 7, 1, 2, 6, 7]
    # tail (2, 6, 7) never occurred before; (6, 7) did, at 1 and 5: the latest one (5) is continued
    assert draft(history, max_ngram=3, max_draft=3) == [1, 2, 6]
    assert draft(history, max_ngram=3, max_draft=1) == [1]
    # a 3-token tail that recurs beats a shorter one
    assert draft([1, 2, 3, 4, 9, 5, 2, 3, 7, 1, 2, 3], max_ngram=3, max_draft=2) == [4, 9]
    assert draft([1, 2, 3], max_ngram=3) == []  # nothing recurs
    assert draft([4, 4, 4], max_ngram=3, max_draft=5) == [4]  # the draft stops where the history does
    # one-token tails are not drafted by default (min_ngram 2), only when asked
    assert draft([3, 8, 1, 3]) == []
    assert draft([3, 8, 1, 3], min_ngram=1, max_draft=2) == [8, 1]


def test_draft_falls_back_to_the_phrasebook():
    book = np.array([9, 1, 2, 3, 4, 0, 1, 2, 5, 6])
    assert draft([7, 1, 2], book, max_draft=3) == [5, 6]  # its latest (1, 2) is followed by 5, 6
    assert draft([7, 9, 1, 2], book, max_draft=3) == [3, 4, 0]  # (9, 1, 2) is longer: it wins
    assert draft([1, 2, 8, 1, 2], book, max_draft=2) == [8, 1]  # the answer's own text comes first
    assert draft([7, 6], book) == []  # 6 ends the book: nothing follows it


@pytest.mark.parametrize("max_new", [1, 5, 24])
def test_one_image_decodes_the_tokens_of_generate(max_new):
    d = build_describer(load_profile("tiny")).eval()
    d.set_phrasebook(["Yes, there is an anomaly in the image, at the center of the image.",
                      "No, there is no anomaly in the image."])
    assert d._book_ids is not None and d._book_ids[-1] == d.tokenizer.eos_token_id
    s = d.image_size
    torch.manual_seed(0)
    for _ in range(3):
        px, sasa = torch.rand(1, 3, s, s), torch.randn(1, 5, d.llm_dim)
        q = ["This is a photo of a fabric for anomaly detection. Is there any anomaly in the image?"]
        d.lookup_draft = 0
        want = d.generate_ids(px, sasa, q, max_new_tokens=max_new, prefixes=[" Yes,"])
        d.lookup_draft = 12
        got = d.generate_ids(px, sasa, q, max_new_tokens=max_new, prefixes=[" Yes,"])
        assert got.tolist() == want.tolist()
        assert got.shape[1] <= max_new


def test_rejected_drafts_cost_passes_never_tokens(monkeypatch):
    # A draft that is always wrong must leave the tokens as they are: the cache is cropped after each pass.
    d = build_describer(load_profile("tiny")).eval()
    s = d.image_size
    px, sasa, q = torch.rand(1, 3, s, s), torch.randn(1, 5, d.llm_dim), ["Is there any anomaly in the image?"]
    d.lookup_draft = 0
    want = d.generate_ids(px, sasa, q, max_new_tokens=16)
    d.lookup_draft = 8
    calls = []

    def wrong(history, book=None, max_draft=8):
        calls.append(max_draft)
        return [d.image_token_id] * max_draft  # a suppressed token: never the model's choice

    monkeypatch.setattr(lookup_decode, "draft", wrong)
    assert d.generate_ids(px, sasa, q, max_new_tokens=16).tolist() == want.tolist()
    assert calls and max(calls) > 1
