"""The steps of a diagnosis that run outside the exported graphs, in numpy alone (no torch, no scipy).

Each function computes what its torch or scipy counterpart in the package computes, and
``tests/export/test_numpy_steps.py`` checks each against that counterpart:

* :func:`read_image`: :func:`samllava.data.load_image` (the same conversions, the same antialiased
  bilinear resize, whose weights :func:`resize_matrix` builds);
* :func:`judge` and :func:`coarse_masks`: :meth:`samllava.coarse.verdict.Verdict.judge` and
  :func:`samllava.coarse.verdict.verdict_masks` (the conformal p-value; hysteresis as skimage's
  ``apply_hysteresis_threshold``, with its 4-connected components from :func:`components`);
* :func:`gate`: :func:`samllava.model.sam_llava.gate_fine_mask`;
* :func:`position_on_grid`: :func:`samllava.data.instructions.position_on_grid`.

The export imports :func:`resize_matrix` too, so the graph and the runner resize with one set of weights.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

NO_POSITION = "none"
GRID = (("top left", "top", "top right"), ("left", "center", "right"),
        ("bottom left", "bottom", "bottom right"))  # samllava.data.instructions.GRID
_SIXTEEN_BIT = 65535.0


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of torch's antialiased bilinear resize along one axis
    (``F.interpolate(..., mode="bilinear", align_corners=False, antialias=True)``, PIL's filter): a
    triangle filter widened by the scale when shrinking, weights normalised per output pixel. Computed in
    float32 step by step as torch's kernel computes them, so the weights are torch's to the last bit or two."""
    f = np.float32
    scale = f(n_in) / f(n_out)
    support = scale if scale >= 1 else f(1)  # bilinear: half its interpolation size (2), times the scale
    inv = f(1) / scale if scale >= 1 else f(1)
    out = np.zeros((n_out, n_in), f)
    for i in range(n_out):
        centre = scale * (f(i) + f(0.5))
        lo = max(int(centre - support + f(0.5)), 0)
        hi = min(int(centre + support + f(0.5)), n_in)
        w = np.maximum(f(1) - np.abs((np.arange(lo, hi, dtype=f) - centre + f(0.5)) * inv), f(0))
        total = f(0)
        for v in w:  # in order, as the kernel sums
            total = f(total + v)
        if total != 0:
            out[i, lo:hi] = w / total
    return out


def _rgb_array(path: Path) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: :func:`samllava.data.images.to_rgb`'s conversions (grey repeated, alpha
    dropped, palette resolved, 16-bit divided by 65535)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "PA", "CMYK", "YCbCr"):
                img = img.convert("RGB")
            elif img.mode == "1":
                img = img.convert("L")
            mode, array = img.mode, np.asarray(img)
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: cannot decode image: corrupt, truncated or not an image ({err})") from err
    if array.dtype == np.uint8:
        pixels = array.astype(np.float32) / 255.0
    elif array.dtype.kind in "iu" and (array.dtype.itemsize == 2 or mode.startswith("I;16") or mode == "I"):
        if array.min() < 0 or array.max() > _SIXTEEN_BIT:
            raise ValueError(f"{path}: integer image with values outside the 16-bit range 0..65535")
        pixels = array.astype(np.float32) / _SIXTEEN_BIT
    else:
        raise ValueError(f"{path}: unsupported pixel format (mode {mode!r}, dtype {array.dtype})")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{path}: {pixels.shape[-1]} channels; expected 1 (grey), 2, 3 (RGB) or 4 (RGBA)")
    return np.repeat(pixels[..., :1], 3, -1) if pixels.shape[-1] < 3 else pixels[..., :3]


def read_image(path: str | os.PathLike, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An image file as (3, size, size) float32 in [0, 1], as :func:`samllava.data.load_image` reads it, and
    the file's own (width, height)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    x = np.ascontiguousarray(_rgb_array(path).transpose(2, 0, 1))  # (3, H, W)
    own = (x.shape[2], x.shape[1])
    if x.shape[1:] == (size, size):
        return x, own
    x = x @ resize_matrix(x.shape[2], size).T  # width first, as torch's separable kernel
    return np.clip(resize_matrix(x.shape[1], size) @ x, 0.0, 1.0), own


def conformal_threshold(scores: np.ndarray, alpha: float) -> np.ndarray:
    """:func:`samllava.coarse.verdict.conformal_threshold` in numpy: calibration scores (n,) or (n, B) -> the
    order statistic at position (n + 1)(1 - alpha), interpolated between its neighbours (the largest when
    that position is n or beyond)."""
    s = np.sort(scores.astype(np.float64), axis=0)
    n = s.shape[0]
    u = (n + 1) * (1 - alpha)
    if u >= n - 1e-9:
        return s[-1]
    j = max(1, math.floor(u + 1e-9))
    return s[j - 1] + (u - j) * (s[j] - s[j - 1])


def judge(scores: np.ndarray, verdict: dict, calibration: np.ndarray | None = None) -> np.ndarray:
    """(B,) bool: defective. ``verdict``: the export's JSON record (rule, image threshold); ``calibration``
    (n, B): for the leave-one-out rule, the support images' scores with each test image in their memory,
    whose :func:`conformal_threshold` is the image threshold; otherwise the recorded image threshold."""
    if verdict["rule"] == "leave-one-out":
        if calibration is None:
            raise ValueError("the leave-one-out verdict needs the calibration scores of the detection graph")
        return scores.astype(np.float64) > conformal_threshold(calibration, verdict["target_fpr"])
    return scores.astype(np.float64) > verdict["image_threshold"]


def components(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) int64: each True pixel's component as the smallest flat index in it, 4-connected
    (``scipy.ndimage.label``'s default in 2-D); -1 outside. Edges hook the larger label onto the smaller and
    labels jump to their roots until every edge joins equal labels: a few passes over whole arrays."""
    h, w = mask.shape
    index = np.arange(h * w).reshape(h, w)
    across, down = mask[:, :-1] & mask[:, 1:], mask[:-1] & mask[1:]
    a = np.concatenate([index[:, :-1][across], index[:-1][down]])
    b = np.concatenate([index[:, 1:][across], index[1:][down]])
    label = np.arange(h * w)
    while True:
        la, lb = label[a], label[b]
        if np.array_equal(la, lb):
            break
        low = np.minimum(la, lb)
        np.minimum.at(label, la, low)
        np.minimum.at(label, lb, low)
        while True:  # pointer jumping: every label to its root
            nxt = label[label]
            if np.array_equal(nxt, label):
                break
            label = nxt
    return np.where(mask.ravel(), label, -1).reshape(h, w)


def hysteresis(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """skimage's ``apply_hysteresis_threshold``: pixels above ``low`` whose 4-connected component holds a
    pixel above ``high`` (``low`` clipped to at most ``high``). (H, W) -> (H, W) bool."""
    low = np.clip(low, None, high)
    labels = components(image > low)
    keep = np.unique(labels[image > high])
    return np.isin(labels, keep[keep >= 0])


def coarse_masks(decision: np.ndarray, defective: np.ndarray, verdict: dict) -> np.ndarray:
    """M'_coarse (B, S, S) bool from decision maps (B, S, S): on an image judged defective the pixels above the
    pixel threshold connected to one above the image threshold (or to the image's own maximum, when that is
    lower), empty on one judged normal."""
    maps = decision.astype(np.float32)
    peaks = maps.reshape(maps.shape[0], -1).max(1)
    # hysteresis keeps pixels strictly above ``high``: just below the maximum, the image's own peak counts
    high = np.minimum(np.float32(verdict["image_threshold"]), np.nextafter(peaks, np.float32(-np.inf)))
    masks = [hysteresis(m, min(verdict["pixel_threshold"], h), h) if d else np.zeros(m.shape, bool)
             for m, h, d in zip(maps, high, defective)]
    return np.stack(masks) if masks else np.zeros(maps.shape, bool)


def gate(fine_logits: np.ndarray, coarse: np.ndarray, defective: np.ndarray) -> np.ndarray:
    """M_fine (B, S, S) bool: SAM's mask (logits > 0) on an image judged defective, M'_coarse where SAM returns
    nothing there, empty on an image judged normal."""
    fine = fine_logits > 0.0
    empty = ~fine.reshape(fine.shape[0], -1).any(1)[:, None, None]
    return defective[:, None, None] & np.where(empty, coarse, fine)


def position_on_grid(mask: np.ndarray) -> str:
    """The 3x3 grid cell of a mask's (H, W) centre of mass (row, column sums as scipy's ``center_of_mass``),
    or ``"none"`` for an empty mask."""
    m = np.asarray(mask) != 0
    if not m.any():
        return NO_POSITION
    total = m.sum()
    rows, cols = np.ogrid[: m.shape[0], : m.shape[1]]
    row = (m * rows.astype(float)).sum() / total
    col = (m * cols.astype(float)).sum() / total
    r = min(int(3 * (row + 0.5) / m.shape[0]), 2)
    c = min(int(3 * (col + 0.5) / m.shape[1]), 2)
    return GRID[r][c]
