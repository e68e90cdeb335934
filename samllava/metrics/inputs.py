"""Input checks shared by the metrics: numpy views of arrays and tensors, binary labels and masks,
one image at a time for pixel metrics. torch is never imported here (importing it costs hundreds of MB
of resident memory); a tensor can only be given by a caller that imported it already."""
from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayLike = Union[np.ndarray, "torch.Tensor"]
MapsLike = Union[ArrayLike, Sequence[ArrayLike]]

def is_tensor(x: Any) -> bool:
    # torch is not imported here (hundreds of MB of resident memory), and an object
    # can only be a tensor if the caller has imported torch already.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def as_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """A numpy view of ``x`` (torch tensors go to the CPU; bfloat16 becomes float32)."""
    if is_tensor(x):
        import torch  # only for tensor inputs: the metrics themselves need numpy alone
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype not in (torch.float16, torch.float32, torch.float64):
            x = x.float()  # numpy has no bfloat16
        return x.numpy()
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr


def as_binary(y: np.ndarray, name: str) -> np.ndarray:
    """``y`` as bool, after checking that it only holds 0 and 1."""
    if y.dtype == bool:
        return y
    if np.issubdtype(y.dtype, np.integer):
        ok = y.size == 0 or (y.min() >= 0 and y.max() <= 1)  # two reductions, no temporaries
    else:
        ok = bool(((y == 0) | (y == 1)).all())
    if not ok:
        bad = np.unique(y[(y != 0) & (y != 1)])[:5]
        raise ValueError(f"{name} must be binary (0/1 or bool), found values {bad.tolist()}")
    return y != 0


def scores_and_labels(scores: ArrayLike, labels: ArrayLike, *, metric: str,
                       need_negatives: bool) -> tuple[np.ndarray, np.ndarray]:
    """Check image scores ``(N,)`` and labels ``(N,)``; return float64 scores and bool labels."""
    s, y = as_numpy(scores, "scores"), as_numpy(labels, "labels")
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got shapes {s.shape} and {y.shape}")
    s = s.astype(np.float64)
    n_bad = int(np.count_nonzero(~np.isfinite(s)))
    if n_bad:
        raise ValueError(f"scores contain {n_bad} NaN or infinite value(s) out of {s.size}")
    y = as_binary(y, "labels")
    check_classes(int(y.sum()), int(y.size - y.sum()), metric=metric, what="samples",
                   need_negatives=need_negatives)
    return s, y


def check_classes(n_pos: int, n_neg: int, *, metric: str, what: str, need_negatives: bool) -> None:
    if n_pos == 0 or (need_negatives and n_neg == 0):
        raise ValueError(f"{metric} is undefined for a single class: got {n_pos} anomalous (1) and "
                         f"{n_neg} normal (0) {what}")


def per_image(x: MapsLike, name: str) -> Sequence[ArrayLike]:
    """A stacked ``(N, H, W)`` array or a list of ``(H, W)`` arrays, indexable per image."""
    if isinstance(x, np.ndarray) or is_tensor(x):
        if x.ndim != 3:
            raise ValueError(f"{name} must be (N, H, W) or a list of (H, W) arrays, got shape {tuple(x.shape)}")
        return x
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        raise ValueError(f"{name} must be an array or a list of arrays, got {type(x).__name__}")
    return x


def image_pairs(maps: MapsLike, masks: MapsLike) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(label, map (H, W), mask (H, W) bool)`` per image, converting one image at a time."""
    maps_s, masks_s = per_image(maps, "maps"), per_image(masks, "masks")
    if len(maps_s) != len(masks_s) or len(maps_s) == 0:
        raise ValueError(f"maps and masks must hold the same, non-zero number of images, "
                         f"got {len(maps_s)} and {len(masks_s)}")
    for i in range(len(maps_s)):
        a, m = as_numpy(maps_s[i], f"maps[{i}]"), as_numpy(masks_s[i], f"masks[{i}]")
        if a.ndim != 2 or a.shape != m.shape:
            raise ValueError(f"maps[{i}] and masks[{i}] must be (H, W) of equal shape, "
                             f"got {a.shape} and {m.shape}")
        yield f"[{i}]", a, as_binary(m, f"masks[{i}]")
