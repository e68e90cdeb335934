"""Facts are measured from the pixels and the mask alone; words are built from them and checked against them."""
import numpy as np
import pytest

from samllava.data.instructions import QUESTION
from samllava.describe.facts import NEUTRAL_SUBJECT, Facts, colour_word, is_plural, measure_facts, subject_of
from samllava.describe.wording import (
    answer_and_description, checked_words, complete, contradictions, description, facts_sentence, said,
)


@pytest.mark.parametrize("rgb, word", [((0.05, 0.05, 0.05), "black"), ((0.5, 0.5, 0.52), "grey"),
                                       ((0.95, 0.95, 0.95), "white"), ((0.8, 0.1, 0.1), "red"),
                                       ((0.5, 0.3, 0.1), "brown"), ((0.1, 0.6, 0.2), "green"),
                                       ((0.1, 0.2, 0.8), "blue"), ((0.3, 0.3, 0.3), "dark grey")])
def test_colour_words(rgb, word):
    assert colour_word(np.array(rgb)) == word


def test_subject_comes_from_the_question_never_from_the_image():
    assert subject_of(QUESTION.format(category="brick wall")) == "a brick wall"
    assert subject_of(QUESTION.format(category="apple")) == "an apple"
    assert subject_of(QUESTION.format(category="object")) == NEUTRAL_SUBJECT  # no category given
    assert subject_of("Is there any anomaly?") == NEUTRAL_SUBJECT
    assert subject_of(QUESTION.format(category="coins")) == "coins"  # a plural takes no article
    assert [is_plural(w) for w in ("capsules", "pcb boards", "glass", "cactus", "chassis", "metal nut")] == [
        True, True, False, False, False, False]


def _grey(side=64, value=0.5):
    return np.full((side, side, 3), value, np.float32)


def test_a_thin_dark_line_is_measured_where_it_lies():
    img, mask = _grey(), np.zeros((64, 64), bool)
    mask[6:8, 4:30] = True  # top left, thin and long
    img[mask] = 0.15
    f = measure_facts(img, mask, "a brick wall")
    assert (f.surface, f.position, f.shape, f.tone, f.colour) == ("grey", "top left", "elongated", "darker", None)


def test_compact_regions_measured_by_their_contrast_and_hue():
    mask = np.zeros((64, 64), bool)
    mask[28:36, 28:36] = True
    dark, light, tinted, faint = _grey(), _grey(), _grey(), _grey()
    dark[mask], light[mask], tinted[mask], faint[mask] = 0.2, 0.8, (0.55, 0.45, 0.35), 0.51
    assert measure_facts(dark, mask, None).tone == "darker"
    assert measure_facts(light, mask, None).tone == "lighter"
    stain = measure_facts(tinted, mask, None)
    assert stain.tone is None and stain.colour == "brown"
    assert (measure_facts(faint, mask, None).tone, measure_facts(faint, mask, None).colour) == (None, None)


def test_no_mask_no_defect():
    f = measure_facts(_grey(value=0.9), np.zeros((64, 64), bool), None)
    assert not f.defect and f.subject == NEUTRAL_SUBJECT and f.surface == "white"
    assert facts_sentence(f) == "The image is mostly white. The segmentation marks no region."
    assert description(f) == "This is a photo of the part, white overall. No defect is visible."


def _facts():
    return Facts("a brick wall", "grey", "top left", "small", "elongated", "darker", None)


def test_description_is_complete_and_says_only_the_facts():
    f = _facts()
    text = answer_and_description(f)
    assert text == ("Yes, there is an anomaly in the image, at the top left of the image. This is a photo of a brick "
                    "wall, grey overall. There is a small defect at the top left of the image: an elongated region, "
                    "darker than its surroundings.")
    assert contradictions(text, f) == [] and complete(text) == text
    s = said(text)
    assert s.position == "top left" and s.kinds == set() and s.defect and s.objects == {"brick", "wall"}


def test_contradictions_name_each_invented_claim():
    f = _facts()
    bad = ("Yes, there is an anomaly at the center of the image. This is a photo of a car on a dark background. "
           "There is a small blue hole.")
    found = contradictions(bad, f)
    assert any("'car'" in p for p in found) and any("'blue'" in p for p in found)
    assert any("dark spot or hole" in p for p in found) and any("'center'" in p for p in found)
    assert contradictions("Yes, there is a scratch at the top left.", f)  # no measurement decides a type
    normal = Facts("a brick wall", "grey")
    assert contradictions("No, there is no anomaly in the image.", normal) == []
    assert contradictions("Yes, there is a crack at the top.", normal)  # a defect where none is marked


def test_checked_words_keep_a_true_model_text_and_replace_a_false_or_cut_one():
    f = _facts()
    true = "Yes, there is an anomaly in the image, at the top left of the image. It is elongated. And then the"
    words, source = checked_words(true, f)
    assert source == "language model" and words.endswith("It is elongated.")  # cut to its complete sentences
    words, source = checked_words(true.replace("elongated", "a scratch"), f)  # a type: replaced
    assert words == answer_and_description(f) and "scratch" in source
    words, source = checked_words("Yes, there is a car at the top left.", f)
    assert words == answer_and_description(f) and "'car'" in source
    words, source = checked_words("Yes, there is an anomaly in the", f)  # nothing complete
    assert words == answer_and_description(f) and "no complete sentence" in source
    words, source = checked_words("Yes, there is an anomaly in the image.", f)  # true but silent on where
    assert words == answer_and_description(f) and "where" in source
