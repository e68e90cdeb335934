"""Instruction records (AnomalyGPT convention), grid positions and yes/no parsing."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samllava.data import Sample, instruction_records, load_folder, position_on_grid
from samllava.data.instructions import POSITIONS, describe, parse_position, shape_word, size_label
from samllava.metrics import parse_yes_no


@pytest.mark.parametrize("row,col,name", [
    (0, 0, "top left"), (0, 4, "top"), (0, 8, "top right"), (4, 0, "left"), (4, 4, "center"),
    (4, 8, "right"), (8, 0, "bottom left"), (8, 4, "bottom"), (8, 8, "bottom right"),
])
def test_position_on_grid_cells(row, col, name):
    mask = np.zeros((9, 9), bool)
    mask[row, col] = True
    assert position_on_grid(mask) == name


def test_position_uses_centre_of_mass_and_handles_empty():
    mask = np.zeros((30, 30), np.uint8)
    mask[0:2, 0:30] = 1  # a bar along the top edge: centre of mass top middle
    assert position_on_grid(mask) == "top"
    mask[:] = 0
    mask[5, 2], mask[25, 2] = 1, 1  # two specks: their mean is the left middle
    assert position_on_grid(mask) == "left"
    assert position_on_grid(np.zeros((5, 5))) == "none"
    assert position_on_grid(torch.ones(1, 6, 6)) == "center"  # (1, H, W) tensors accepted
    with pytest.raises(ValueError, match="shape"):
        position_on_grid(np.zeros((2, 2, 2, 2)))
    assert len(set(POSITIONS)) == 9


def test_records_for_synthetic_data(synthetic_root: Path):
    cat = load_folder(synthetic_root, category="fabric")["fabric"]
    records = instruction_records(cat.test)
    assert len(records) == len(cat.test)
    for r, s in zip(records, cat.test):
        assert r["question"] == "This is a photo of a fabric for anomaly detection. Is there any anomaly in the image?"
        if s.label == 0:
            assert r["answer"] == "No, there is no anomaly in the image."
        else:
            assert r["answer"] == f"Yes, there is an anomaly in the image, at the {s.meta['position']} of the image."
        assert r["description"] == s.description and r["target"] == f"{r['answer']} {r['description']}"
        assert parse_yes_no(r["answer"]) == bool(s.label)
    assert instruction_records(cat.test[:1], category_phrase="cloth")[0]["question"].startswith(
        "This is a photo of a cloth "
    )


def test_records_from_masks_and_image_level_samples(tmp_path: Path):
    img, mask = tmp_path / "001.png", tmp_path / "001_mask.png"
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(img)
    m = np.zeros((12, 12), np.uint8)
    m[9:12, 9:12] = 255
    Image.fromarray(m).save(mask)
    with_mask = Sample(img, "metal_nut", "test", 1, "scratch", mask)
    no_mask = Sample(img, "metal_nut", "test", 1, "scratch", None)
    normal = Sample(img, "metal_nut", "test", 0, "good", None)
    r1, r2, r3 = instruction_records([with_mask, no_mask, normal], category_phrase={"metal_nut": "metal nut"})
    assert r1["position"] == "bottom right"
    assert r1["answer"] == "Yes, there is an anomaly in the image, at the bottom right of the image."
    assert "scratch" in r1["description"] and "bottom right" in r1["description"]
    assert "metal nut for anomaly detection" in r1["question"]
    assert r2["answer"] == "Yes, there is an anomaly in the image." and r2["position"] == "none"
    assert r3["answer"] == "No, there is no anomaly in the image." and "no defect" in r3["description"]


def test_describe_mentions_every_attribute():
    text = describe("a brushed steel plate", "scratch", "top left", "tiny", "thin straight line", "white")
    for word in ("brushed steel plate", "tiny white scratch", "top left", "thin straight line"):
        assert word in text
    assert "an oval spot" in describe("x", "hole", "center", "small", "oval spot", "black")


@pytest.mark.parametrize("text,expected", [
    ("Yes, there is an anomaly in the image, at the top of the image.", True),
    ("No, there is no anomaly in the image.", False),
    ("  yes.", True),
    ("NO", False),
    ("There is no anomaly in this image.", None),  # only the leading yes/no decides (Table 5's rule)
    ("The pill looks normal and intact.", None),
    ("There is a crack at the center.", None),
    ("I cannot tell.", None),
    ("", None),
])
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) is expected


@pytest.mark.parametrize("text, want", [
    ("Yes, there is an anomaly in the image, at the top left of the image.", "top left"),
    ("Yes, at the top of the image; the bottom right is clean.", "top"),  # the first named, read whole
    ("The defect lies at the Bottom Right.", "bottom right"),
    ("No, there is no anomaly in the image.", None),
    ("It stops at the desktop.", None),  # word boundaries: "top" inside a word is not a position
])
def test_parse_position_reads_the_first_position_whole(text, want):
    assert parse_position(text) == want
    assert want is None or want in POSITIONS



def test_size_label_bins():
    m = np.zeros((100, 100), bool)
    assert size_label(m) == "tiny"
    m[:10, :5] = True  # 0.5 %
    assert size_label(m) == "small"
    m[:20, :20] = True  # 4 %: the "medium" bin ends below 4 %
    assert size_label(m) == "large"


def test_shape_word_hand_made_masks():
    m = np.zeros((40, 40), bool)
    assert shape_word(m) == "none"
    m[10:14, 5:35] = True  # 4 x 30 bar
    assert shape_word(m) == "elongated"
    m[:] = False
    m[10:20, 10:20] = True
    assert shape_word(m) == "round"
    m[:] = False
    m[10:20, 10:30] = True  # 2:1 rectangle
    assert shape_word(m) == "irregular"
    m[:] = False
    m[2, 2] = m[20, 20] = m[35, 5] = True
    assert shape_word(m) == "scattered"
