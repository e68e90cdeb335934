import numpy as np
import pytest
import torch

from samllava.coarse import prompts
from samllava.coarse.otsu import otsu_masks, otsu_threshold


def test_prompt_sentences_cover_states_and_templates():
    normal, anomalous = prompts.prompt_sentences("metal nut")
    assert len(normal) == len(prompts.NORMAL_STATES) * len(prompts.TEMPLATES)
    assert len(anomalous) == len(prompts.ANOMALOUS_STATES) * len(prompts.TEMPLATES)
    assert "a photo of the broken metal nut for visual inspection." in anomalous
    assert "a cropped photo of the metal nut without defect." in normal
    assert not set(normal) & set(anomalous)
    assert all("{}" not in s for s in normal + anomalous)


def test_category_phrases():
    assert prompts.category_phrase("metal_nut") == "metal nut"
    assert prompts.category_phrase("pcb1") == "printed circuit board"
    assert prompts.category_phrase("chewinggum") == "chewing gum"
    assert prompts.category_phrase("wood_grain") == "wooden board"
    assert prompts.category_phrase("my_widget", allow_generic=True) == "object"
    with pytest.raises(ValueError, match="my_widget.*known categories.*bottle"):
        prompts.category_phrase("my_widget")
    with pytest.raises(ValueError, match="non-empty"):
        prompts.prompt_sentences("  ")


def test_every_data_set_category_has_a_phrase():
    try:
        from samllava.data import MVTEC_CATEGORIES, SYNTHETIC_CATEGORIES, VISA_CATEGORIES
        from samllava.data.synthetic import TADD_STANDIN_SUBSETS
    except ImportError as e:  # the data package is another stage's; say why instead of failing here
        pytest.skip(f"samllava.data not importable: {e}")
    names = [
        *MVTEC_CATEGORIES,
        *VISA_CATEGORIES,
        *SYNTHETIC_CATEGORIES,
        *(c.name for c in TADD_STANDIN_SUBSETS.values()),
    ]
    missing = [n for n in names if n not in prompts.CATEGORY_PHRASES]
    assert not missing


def test_otsu_hand_computed_bimodal():
    # Values 0.1 0.1 0.2 0.2 | 0.8 0.9 0.9 0.9. Between-class variance w0*w1*(mu0-mu1)^2 per split:
    #   after 0.1: 0.25*0.75*(0.1-0.65)^2  = 0.0567
    #   after 0.2: 0.50*0.50*(0.15-0.875)^2 = 0.1314  <- maximum
    #   after 0.8: 0.625*0.375*(0.28-0.9)^2 = 0.0901
    # so tau lies in [0.2, 0.8) and the mask is exactly the four high pixels.
    a = torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.8, 0.9, 0.9, 0.9]])
    # Second map: 0.0 x3, 0.25, 1.0 x4 -> splits: after 0.0: .375*.625*(0-.85)^2 = .1693;
    # after 0.25: .5*.5*(.0625-1)^2 = .2197 (max); so only the 1.0 pixels are foreground.
    # (0.25 sits on a histogram bin edge: skimage's tau is a bin centre, resolution (max-min)/256.)
    b = torch.tensor([[0.0, 0.0, 0.0, 0.25], [1.0, 1.0, 1.0, 1.0]])
    masks = otsu_masks(torch.stack([a, b]))
    assert masks.dtype == torch.bool and masks.shape == (2, 2, 4)
    assert torch.equal(masks[0], a >= 0.8)
    assert torch.equal(masks[1], b == 1.0)
    assert 0.2 <= otsu_threshold(a) < 0.8
    assert 0.25 <= otsu_threshold(b) < 1.0
    assert 0.2 <= otsu_threshold(a.numpy()) < 0.8  # numpy input too


def test_otsu_constant_map_gives_empty_mask():
    maps = torch.stack([torch.full((5, 5), 0.7), torch.zeros(5, 5)])
    assert not otsu_masks(maps).any()
    assert np.isnan(otsu_threshold(maps[0]))


def test_otsu_bad_inputs():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        otsu_masks(torch.rand(4, 4))
    bad = torch.rand(1, 4, 4)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        otsu_masks(bad)
