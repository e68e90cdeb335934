"""The hallucination measure counts claims against the facts, and position and type against the labels."""
import math

import pandas as pd
import pytest
import torch

from samllava.core.config import load_profile
from samllava.data import generate_synthetic, load_dataset
from samllava.model.sam_llava import build_model

from samllava.describe.facts import Facts
from samllava.describe.wording import answer_and_description
from samllava.evaluate.words import image_record, words_eval, words_summary

CRACK = Facts("a brick wall", "grey", "top left", "small", "elongated", "darker", None)
TYPED = "Yes, there is an anomaly in the image, at the top left of the image. It is a crack."  # unchecked LLaVA text


def test_one_image_counted_against_facts_and_labels():
    words = answer_and_description(CRACK)
    model_text = "Yes, there is an anomaly at the top left. It is a car and a black hole at the"
    rec = image_record(model_text, words, "facts (...)", CRACK, 1, "top left", "crack")
    assert not rec["hallucinated"] and rec["model_hallucinated"] and rec["cut"] and not rec["from_model"]
    assert rec["position_ok"] == 1.0 and rec["type_named"] == 0.0 and math.isnan(rec["type_ok"])  # no type named
    typed = image_record(TYPED, TYPED, "language model", CRACK, 1, "top left", "crack")  # a type named: scored
    assert typed["hallucinated"] and typed["type_named"] == 1.0 and typed["type_ok"] == 1.0
    # the label says hole: the named type is wrong; the label says bottom: so is the position
    wrong = image_record(TYPED, TYPED, "language model", CRACK, 1, "bottom", "hole")
    assert wrong["type_ok"] == 0.0 and wrong["position_ok"] == 0.0 and wrong["from_model"]
    # a label no measurement tells (MVTec's "bent"): type not scored
    assert math.isnan(image_record(TYPED, TYPED, "language model", CRACK, 1, "top left", "bent")["type_ok"])
    normal = image_record("No, there is no anomaly in the image.", "No, there is no anomaly in the image.",
                          "language model", Facts("a brick wall", "grey"), 0, "none", "good")
    assert not normal["hallucinated"] and math.isnan(normal["position_ok"])


def test_summary_percentages():
    rows = pd.DataFrame([image_record("x", answer_and_description(CRACK), "facts", CRACK, 1, "top left", "crack"),
                         image_record("x", answer_and_description(CRACK), "facts", CRACK, 1, "top", "crack"),
                         image_record(TYPED, TYPED, "language model", CRACK, 1, "top left", "hole")])
    s = words_summary(rows)
    assert s["images"] == 3 and round(s["hallucinated"], 1) == 33.3 and round(s["position_accuracy"], 1) == 66.7
    assert round(s["type_named"], 1) == 33.3 and s["type_accuracy"] == 0
    assert round(s["contradicted_by_labels"], 1) == 66.7


@pytest.fixture(scope="module")
def tiny_model_and_data(tmp_path_factory):
    root = generate_synthetic(tmp_path_factory.mktemp("syn"), categories=["fabric"], n_train=3, n_test=4, size=64,
                              seed=2)
    torch.manual_seed(0)
    return build_model(load_profile("tiny"), device="cpu"), load_dataset(root)


def test_words_eval_runs_on_a_data_set(tiny_model_and_data):
    model, data = tiny_model_and_data
    rows = words_eval(model, data, shots=1, max_new_tokens=6)
    assert len(rows) == sum(len(c.test) for c in data.values())
    assert rows["hallucinated"].sum() == 0  # the tiny profile checks its words: what is reported is grounded
