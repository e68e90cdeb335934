"""Where generated data, converted weights and checkpoints live (all outside git)."""
from __future__ import annotations

import os
from pathlib import Path

from .config import Profile
from .data import generate_synthetic
from .results import REPO_ROOT


def data_dir() -> Path:
    """``$SAMLLAVA_DATA_DIR`` or ``<repo>/data`` (ignored by git): generated data sets."""
    return Path(os.environ.get("SAMLLAVA_DATA_DIR") or REPO_ROOT / "data")


def checkpoint_dir() -> Path:
    """``$SAMLLAVA_CHECKPOINT_DIR`` or ``<repo>/build/checkpoints``: trained models shared by notebooks."""
    return Path(os.environ.get("SAMLLAVA_CHECKPOINT_DIR") or REPO_ROOT / "build" / "checkpoints")


def ensure_synthetic(profile: Profile, seed: int = 0, name: str = "synthetic") -> Path:
    """The profile's synthetic data set, generated once (deterministic by seed) and reused."""
    size = profile.data.image_size
    root = data_dir() / f"{name}_s{size}_n{profile.data.synthetic_images}_seed{seed}"
    if not (root / ".complete").exists():
        generate_synthetic(root, n_train=profile.data.synthetic_train, n_test=profile.data.synthetic_images,
                           size=size, seed=seed, overwrite=True)
        (root / ".complete").write_text("ok\n")
    return root
