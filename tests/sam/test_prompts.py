"""Coarse mask -> SAM prompts (samllava.sam.prompts), hand-computed."""
import math

import pytest
import torch

from samllava.sam.prompts import boxes_from_mask, mask_to_logits, points_from_mask, resize_pad_mask


def test_mask_to_logits_4x4_to_2x2():
    mask = torch.tensor([[1, 1, 0, 0],
                         [1, 1, 0, 0],
                         [0, 0, 0, 1],
                         [0, 0, 0, 0]], dtype=torch.bool)[None]
    # area fractions [[1, 0], [0, 1/4]] -> c * (2f - 1) with c = 8
    expected = torch.tensor([[8.0, -8.0], [-8.0, -4.0]])[None, None]
    torch.testing.assert_close(mask_to_logits(mask, 2, 8.0), expected)


def test_mask_to_logits_upsamples_blocks_and_empty_is_all_negative():
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])[None]
    out = mask_to_logits(mask, 4, 5.0)[0, 0]
    assert out.shape == (4, 4)
    assert (out[:2, :2] == 5.0).all() and (out[2:] == -5.0).all() and (out[:, 2:] == -5.0).all()
    empty = mask_to_logits(torch.zeros(2, 7, 7), 4, 3.0)
    assert empty.shape == (2, 1, 4, 4) and (empty == -3.0).all()


def test_non_square_mask_is_resized_and_padded_like_the_image():
    mask = torch.ones(1, 3, 6)  # longest side 6 -> 4: (2, 4), then padded to 4 x 4
    frac = resize_pad_mask(mask, 4)[0, 0]
    assert (frac[:2] == 1).all() and (frac[2:] == 0).all()
    logits = mask_to_logits(mask, 4, 2.0)[0, 0]
    assert (logits[:2] == 2.0).all() and (logits[2:] == -2.0).all()


def test_boxes_of_largest_component_and_of_several():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 1:4, 2:6] = True  # 12 px, rows 1-3, cols 2-5
    mask[0, 6, 6] = True  # 1 px
    torch.testing.assert_close(boxes_from_mask(mask), torch.tensor([[2.0, 1.0, 5.0, 3.0]]))
    torch.testing.assert_close(boxes_from_mask(mask, components=2), torch.tensor([[2.0, 1.0, 6.0, 6.0]]))


def test_boxes_use_eight_connectivity_and_nan_for_empty():
    mask = torch.zeros(3, 5, 5)
    mask[0, 0, 0] = mask[0, 1, 1] = mask[0, 2, 2] = 1.0  # one diagonal component
    mask[1] = 1.0  # full image
    boxes = boxes_from_mask(mask)
    torch.testing.assert_close(boxes[:2], torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]]))
    assert boxes[2].isnan().all()


def test_points_of_two_blobs_largest_first_padded():
    mask = torch.zeros(1, 8, 9, dtype=torch.bool)
    mask[0, 5:7, 6:8] = True  # 4 px, centroid (y, x) = (5.5, 6.5)
    mask[0, 0:3, 0:3] = True  # 9 px, centroid (1, 1)
    coords, labels = points_from_mask(mask, max_points=3)
    torch.testing.assert_close(coords[0, :2], torch.tensor([[1.0, 1.0], [6.5, 5.5]]))
    assert labels.tolist() == [[1, 1, -1]]
    assert labels.dtype == torch.int64
    coords, labels = points_from_mask(mask, max_points=1)
    assert labels.tolist() == [[1]] and coords[0, 0].tolist() == [1.0, 1.0]


def test_point_of_a_ring_lies_on_the_ring():
    mask = torch.zeros(1, 7, 7, dtype=torch.bool)
    mask[0, 1:6, 1:6] = True
    mask[0, 2:5, 2:5] = False  # ring: centroid (3, 3) is in the hole
    coords, labels = points_from_mask(mask, max_points=2)
    x, y = coords[0, 0].tolist()
    assert labels[0].tolist() == [1, -1]
    assert mask[0, int(y), int(x)]
    assert math.dist((x, y), (3.0, 3.0)) == pytest.approx(2.0)  # the ring's nearest pixels: 2 px from the hole's centre


def test_empty_mask_gives_no_point():
    coords, labels = points_from_mask(torch.zeros(2, 4, 4), max_points=2)
    assert coords.shape == (2, 2, 2) and (labels == -1).all()


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        mask_to_logits(torch.zeros(4, 4), 2, 1.0)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        boxes_from_mask(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="max_points"):
        points_from_mask(torch.zeros(1, 4, 4), max_points=0)
