"""The assembled inference model of a checkpoint, kept on disk for the next process on the CPU.

Building a model (CLIP, the few-shot backbone, SAM, LLaVA around its language model, their tokenizers) and
folding the checkpoint's LoRA in takes longer than reading the result back in one memory-mapped file
(docs/decisions.md), so :func:`samllava.model.checkpoint.load_model` with ``cache=True`` (``samllava
diagnose`` and the panels that share its road) keeps the model it built and reads it back next time.

The file is a pickle of the whole module, and reading a pickle runs code. So the files live in a folder only
their owner can open (0700), one is read only when that folder is this user's and closed to others, and a
file's name is a digest of everything its model was built from: the package's source, the versions of the
libraries whose classes it holds, the profile, the profile's weight files and the checkpoint file (path,
size, modification time). Any change misses and builds anew; a file that cannot be read is built again. At
most one file is kept per checkpoint path (an older one is removed when a new one is written).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import tempfile
from pathlib import Path

import torch

from samllava.assets import weights
from samllava.core.provenance import files_digest, package_versions

PACKAGE = Path(__file__).resolve().parents[1]


def cache_folder() -> Path:
    return weights.cache_dir() / "assembled"


def _identity(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def cache_file(profile, checkpoint: Path) -> Path | None:
    """Where the model of ``profile`` with ``checkpoint`` (a file) is kept; None when a weight file it is built
    from cannot be found (the build itself then says what is missing)."""
    try:
        files = [_identity(weights.resolve(w)) for w in weights.profile_weight_ids(profile)]
        own = _identity(checkpoint)
    except (OSError, KeyError):  # a missing weight file (MissingWeightsError is an OSError) or id
        return None
    source, _ = files_digest(f for f in PACKAGE.rglob("*") if f.suffix in (".py", ".json") and f.is_file())
    key = json.dumps({"profile": profile.to_dict(), "weights": files, "checkpoint": own,
                      "libraries": package_versions(), "source": source}, sort_keys=True, default=str)
    where = hashlib.sha256(own[0].encode()).hexdigest()[:12]
    return cache_folder() / f"{where}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def _closed(folder: Path) -> bool:
    """The folder is this user's and no one else may read or write in it (so no one else put a file there)."""
    try:
        st = folder.stat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def read(file: Path | None, kind: type) -> torch.nn.Module | None:
    """The model kept in ``file``, its tensors memory-mapped; None when there is none, when its folder is not
    this user's own closed folder, or when it cannot be read as a ``kind``."""
    if file is None or not file.is_file() or not _closed(file.parent):
        return None
    try:
        model = torch.load(file, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # truncated, or pickled by code that has gone: built again
        return None
    return model if isinstance(model, kind) else None


def write(model: torch.nn.Module, file: Path | None) -> None:
    """Keep ``model`` in ``file`` (written beside it and renamed into place) and remove the older files of the
    same checkpoint path. A folder that cannot be written, or a model that cannot be pickled, keeps nothing."""
    if file is None:
        return
    folder = file.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _closed(folder):
            return
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{file.name}.")  # 0600
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(model, f)
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except (OSError, TypeError, AttributeError, pickle.PicklingError):
        return
    prefix = file.name.split("-")[0]
    for old in folder.glob(f"{prefix}-*.pt"):
        if old != file:
            old.unlink(missing_ok=True)
