"""Where generated data, converted weights and checkpoints live (all outside git)."""
from __future__ import annotations

import os
from pathlib import Path

from samllava.core.results import REPO_ROOT


def data_dir() -> Path:
    """``$SAMLLAVA_DATA_DIR`` or ``<repo>/data`` (ignored by git): generated data sets."""
    return Path(os.environ.get("SAMLLAVA_DATA_DIR") or REPO_ROOT / "data")


def checkpoint_dir() -> Path:
    """``$SAMLLAVA_CHECKPOINT_DIR`` or ``<repo>/build/checkpoints``: trained models shared by notebooks."""
    return Path(os.environ.get("SAMLLAVA_CHECKPOINT_DIR") or REPO_ROOT / "build" / "checkpoints")
