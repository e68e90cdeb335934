"""Which files are images, whether they open, and one output name per image: the standard library and Pillow
only, so that the torch-free export runner (:mod:`samllava.export.runner`) and ``samllava diagnose`` gather,
check and name images alike."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from PIL import Image

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def gather_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files from paths that are files or folders (recursive, sorted, hidden files ignored), in the
    order given, each once. A missing path, a folder without images or a non-image file raises, naming it."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise ValueError(f"{p}: a folder without images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{p}: not an image file (expected one of {', '.join(sorted(IMAGE_SUFFIXES))})")
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return list(dict.fromkeys(out))


def output_names(files: list[Path]) -> list[str]:
    """One output folder name per image: its stem, prefixed by as many parent folder names as it takes
    to be unique (``good_000``, ``crack_000``)."""
    depth = 0
    while True:
        names = ["_".join([*f.parent.parts[len(f.parent.parts) - depth:], f.stem]) if depth else f.stem for f in files]
        if len(set(names)) == len(names) or depth > max(len(f.parts) for f in files):
            return names if len(set(names)) == len(names) else [f"{n}_{i}" for i, n in enumerate(names)]
        depth += 1


def check_readable(files: list[Path]) -> None:
    """Open every image's header first, so that a bad file stops the run before any work, naming it."""
    for f in files:
        try:
            with Image.open(f) as im:
                im.verify()
        except Exception as e:  # PIL raises many types for corrupt or unsupported files
            raise ValueError(f"{f}: not a readable image ({type(e).__name__}: {e})") from None
