"""Reading images and ground-truth masks into tensors.

Conversions (documented, never silent changes of content):

* greyscale (``L``, ``1``, ``P``, ``LA``) -> RGB by repeating the grey channel (MVTec grid, screw, zipper);
* ``RGBA`` / ``LA`` -> the colour channels, alpha is dropped (not composited onto a background);
* 16-bit (``I;16*``, or ``I`` holding 0..65535) -> divided by 65535, so the result is in [0, 1];
* ``CMYK`` / ``YCbCr`` -> RGB through Pillow.

Anything else (float images, unreadable, truncated or corrupt files) raises ``ValueError`` naming the
file. Masks are binarised (non-zero = anomaly, so VisA's multi-id masks become one defect class)
and resized with nearest-neighbour interpolation, so they stay binary.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

# Suffixes the folder loaders accept as images (compared in lower case).

_SIXTEEN_BIT = 65535.0


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image read from its header only (cheap, no pixel decoding)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err


def check_mask_matches(image_path: str | os.PathLike, mask_path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming both files when the mask's size differs from its image's."""
    img_size, mask_size = image_size(image_path), image_size(mask_path)
    if img_size != mask_size:
        raise ValueError(f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} (WxH) but its image {image_path} is "
                         f"{img_size[0]}x{img_size[1]}: a mask must have the size of its image")


def read_array(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Decode a whole file into ``(array, mode)``: ``array`` is HxW or HxWxC as Pillow gives it.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it is
    not an image, or is corrupt or truncated (Pillow only notices truncation when decoding).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "PA"):
                # Palette images: keep indices for masks (VisA ids); colours are resolved in to_rgb.
                return np.asarray(img), mode
            if mode == "CMYK" or mode == "YCbCr" or mode == "1":
                img = img.convert("RGB" if mode != "1" else "L")
                mode = img.mode
            return np.asarray(img), mode
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(
            f"{path}: cannot decode image, the file is corrupt, truncated or not an image ({err})"
        ) from err


def _scale(array: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """Integer pixels -> float32 in [0, 1]: 8-bit / 255, 16-bit / 65535."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if (array.dtype.kind == "u" and array.dtype.itemsize == 2) or mode.startswith("I;16"):
        return array.astype(np.float32) / _SIXTEEN_BIT
    if mode == "I" and array.dtype.kind in "iu":
        # Pillow opens 16-bit greyscale PNGs as 32-bit "I": accept the 16-bit range only.
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > _SIXTEEN_BIT:
            raise ValueError(f"{path}: 32-bit integer image with values {lo}..{hi} outside the 16-bit range 0..65535")
        return array.astype(np.float32) / _SIXTEEN_BIT
    raise ValueError(f"{path}: unsupported pixel format (mode {mode!r}, dtype {array.dtype}); "
                     "expected 8- or 16-bit greyscale, RGB or RGBA")


def to_rgb(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as an HxWx3 float32 array in [0, 1] (conversions in the module docstring)."""
    path = Path(path)
    array, mode = read_array(path)
    if mode in ("P", "PA"):
        # Resolve the palette to colours (transparency is dropped like an alpha channel).
        with Image.open(path) as img:
            array, mode = np.asarray(img.convert("RGB")), "RGB"
    pixels = _scale(array, mode, path)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[-1]
    if channels in (1, 2):  # L or LA: grey (+ alpha, dropped)
        pixels = np.repeat(pixels[..., :1], 3, axis=-1)
    elif channels in (3, 4):  # RGB or RGBA: alpha dropped
        pixels = pixels[..., :3]
    else:
        raise ValueError(f"{path}: {channels} channels; expected 1 (grey), 2, 3 (RGB) or 4 (RGBA)")
    return np.ascontiguousarray(pixels)


def _resize(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(C,H,W) -> (C,size,size). Bilinear with antialiasing for images (stays inside [0, 1]); nearest for masks."""
    if t.shape[-2:] == (size, size):
        return t
    if mode == "nearest":
        return F.interpolate(t[None], size=(size, size), mode="nearest")[0]
    return F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(
        0.0, 1.0
    )


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Read an image as a ``(3, size, size)`` float32 tensor in [0, 1].

    Non-square images are resized to a square (as MVTec/VisA peers do). See the module docstring
    for the greyscale, RGBA and 16-bit conversions. Raises ``ValueError`` naming the file for
    corrupt, truncated or unsupported images, ``FileNotFoundError`` for a missing one.
    """
    _check_size(size)
    pixels = torch.from_numpy(to_rgb(path)).permute(2, 0, 1)  # (3, H, W)
    return _resize(pixels.contiguous(), size, "bilinear")


class ImageFiles:
    """Image files read on demand: ``files[i:j]`` (or ``files[index_tensor]``) is an ``(n, 3, size, size)``
    float32 tensor in [0, 1] (:func:`load_image`), ``len(files)`` the number of files.

    What :meth:`samllava.coarse.memory.FewShotCalibrator.fit` takes besides a tensor, so a support folder
    of hundreds of images is read a chunk at a time instead of held in memory as one tensor (about 0.8 MB
    per image at 256 px)."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: int) -> None:
        _check_size(size)
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
        picked = self.paths[index] if isinstance(index, slice) else [self.paths[int(i)] for i in index]
        if not picked:
            return torch.zeros(0, 3, self.size, self.size)
        return torch.stack([load_image(f, self.size) for f in picked])


def load_mask(path: str | os.PathLike, size: int, image_path: str | os.PathLike | None = None) -> torch.Tensor:
    """Read a ground-truth mask as a ``(1, size, size)`` float32 tensor with values in {0, 1}.

    Any non-zero pixel (in any colour channel; alpha ignored) is anomalous, which binarises VisA's
    multi-id masks and 0/255 MVTec masks alike. Resized with nearest-neighbour interpolation.
    With ``image_path``, the mask's size is first checked against the image's (headers only).
    """
    _check_size(size)
    if image_path is not None:
        check_mask_matches(image_path, path)
    array, _ = read_array(path)
    if array.ndim == 3:
        array = array[..., : 3 if array.shape[-1] >= 3 else 1].any(axis=-1)  # drop alpha (RGBA / LA)
    binary = torch.from_numpy(np.asarray(array != 0, dtype=np.float32))[None]  # (1, H, W)
    return _resize(binary, size, "nearest")
