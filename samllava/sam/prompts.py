"""Coarse mask -> SAM prompts (Sec. 3.1, Eq. 3): mask logits, boxes, points.

Geometry. SAM resizes an image so that its longest side is the encoder side (1024), keeping the
aspect ratio (``ResizeLongestSide.get_preprocess_shape``), and pads bottom/right to a square.
Every prompt made here lives in that same frame:

* :func:`resize_pad_mask` / :func:`mask_to_logits` resize the mask with the *same* longest-side
  rule to the requested side (the mask prompt side, 4x the embedding side, or the embedding side
  itself) and pad like the image. The mask side is rounded on its own, so for non-square inputs
  the resized extent can differ from image-side / 4 by at most one low-res pixel.
* :func:`boxes_from_mask` and :func:`points_from_mask` return pixel coordinates of the given mask;
  the cascade maps them to the SAM frame with ``ResizeLongestSide.apply_{boxes,coords}_torch``.

Connected components use ``scipy.ndimage`` with 8-connectivity (skimage's default in 2-D).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segment_anything.utils.amg import batched_mask_to_box
from segment_anything.utils.transforms import ResizeLongestSide

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _check_masks(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool/float -> (B, H, W) bool (float masks: > 0.5)."""
    if mask.ndim != 3:
        raise ValueError(f"coarse masks must be (B, H, W), got shape {tuple(mask.shape)}")
    return mask if mask.dtype == torch.bool else mask > 0.5


def resize_pad_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Area-resize a mask into SAM's resize-longest-side + pad frame.

    Args:
        mask: (B, H, W) bool or float in [0, 1].
        size: side of the square output frame.

    Returns:
        (B, 1, size, size) float: the fraction of each output cell inside the mask; the padding
        (bottom/right, non-square inputs) is 0, i.e. outside.
    """
    if mask.ndim != 3:
        raise ValueError(f"masks must be (B, H, W), got shape {tuple(mask.shape)}")
    h, w = mask.shape[-2:]
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(h, w, size)
    x = mask.float().unsqueeze(1)
    if (new_h, new_w) != (h, w):
        # "area" averages when shrinking (a fraction, no aliasing of thin defects); when growing it
        # repeats pixels like nearest.
        x = F.interpolate(x, (new_h, new_w), mode="area")
    return F.pad(x, (0, size - new_w, 0, size - new_h))


def mask_to_logits(mask: torch.Tensor, size: int, c: float) -> torch.Tensor:
    """The coarse mask as SAM's ``mask_input``: low-resolution LOGITS, not a 0/1 mask.

    SAM's prompt encoder was trained on its own low-res logits (``low_res_logits``, 256 x 256 for a
    1024 input). A 0/1 mask would sit at SAM's decision boundary (logit 0 = probability 0.5) and
    below it; ``+c`` inside / ``-c`` outside instead says "foreground with probability sigmoid(c)".
    Cells that the resize cuts through get ``c * (2 f - 1)`` for their inside fraction ``f`` (linear
    between the two), so half-covered cells sit at 0. An empty mask gives ``-c`` everywhere: a
    valid prompt meaning "nothing here".

    Args:
        mask: (B, H, W) bool or float in [0, 1].
        size: the mask prompt side, ``sam.prompt_encoder.mask_input_size`` (4 x embedding side).
        c: logit magnitude (``SamConfig.mask_logit``).

    Returns:
        (B, 1, size, size) float logits in [-c, c]; padding is ``-c``.
    """
    return c * (2.0 * resize_pad_mask(mask, size) - 1.0)


def _ranked_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label image of a 2-D bool mask and its component ids, largest first (ties: raster order)."""
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n == 0:
        return labels, np.zeros(0, dtype=np.int64)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, np.argsort(-sizes, kind="stable") + 1


def boxes_from_mask(mask: torch.Tensor, components: int = 1) -> torch.Tensor:
    """Bounding box of the ``components`` largest connected components of each mask.

    ``components=1`` (the default) boxes the largest defect only, the one SAM box prompt per image
    can describe; a large value boxes every component together.

    Args:
        mask: (B, H, W) bool or float (> 0.5 is inside).
        components: how many of the largest components the box encloses (>= 1).

    Returns:
        (B, 4) float boxes ``(x0, y0, x1, y1)`` in pixel indices of ``mask``, inclusive (SAM's
        ``batched_mask_to_box`` convention). An empty mask has no box: its row is NaN, and the
        cascade then gives that image no box prompt.
    """
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    mask = _check_masks(mask)
    keep = np.zeros(tuple(mask.shape), dtype=bool)
    for b, m in enumerate(mask.float().cpu().numpy()):
        labels, ranked = _ranked_components(m)
        keep[b] = np.isin(labels, ranked[:components])
    keep_t = torch.from_numpy(keep)
    boxes = batched_mask_to_box(keep_t).float()
    boxes[~keep_t.flatten(1).any(1)] = float("nan")
    return boxes.to(mask.device)


def points_from_mask(mask: torch.Tensor, max_points: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """One positive point per connected component (largest first), up to ``max_points``.

    The point is the component's centroid; where the centroid falls outside the component (a ring
    or a crescent) it moves to the component's pixel nearest to it, so every positive point lies
    on the defect.

    Args:
        mask: (B, H, W) bool or float (> 0.5 is inside).
        max_points: N, points per image.

    Returns:
        coords (B, N, 2) float ``(x, y)`` pixel indices of ``mask``; labels (B, N) int64, 1 for a
        point and -1 for padding (SAM's "not a point"). An empty mask gives only padding: SAM then
        sees no point prompt.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    mask = _check_masks(mask)
    coords = np.zeros((mask.shape[0], max_points, 2), dtype=np.float32)
    labels = -np.ones((mask.shape[0], max_points), dtype=np.int64)
    for b, m in enumerate(mask.float().cpu().numpy()):
        comp, ranked = _ranked_components(m)
        ranked = ranked[:max_points]
        if len(ranked) == 0:
            continue
        centres = np.asarray(ndimage.center_of_mass(m, comp, ranked), dtype=np.float64).reshape(-1, 2)  # (n, 2) (y, x)
        for i, (cid, (y, x)) in enumerate(zip(ranked, centres)):
            if comp[int(round(y)), int(round(x))] != cid:
                pixels = np.argwhere(comp == cid)
                y, x = pixels[np.argmin(((pixels - (y, x)) ** 2).sum(1))]
            coords[b, i] = (x, y)
        labels[b, : len(ranked)] = 1
    return torch.from_numpy(coords).to(mask.device), torch.from_numpy(labels).to(mask.device)
