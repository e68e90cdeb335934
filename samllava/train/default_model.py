"""The profile's trained model that ``diagnose`` and ``evaluate --stage full`` use without ``--checkpoint``.

It lives in the weights cache (``$SAMLLAVA_WEIGHTS_DIR`` or ``~/.cache/samllava``) under
``models/<profile>-<digest>/``, where the digest covers the whole profile, the training budget and
the source of every module the trained weights depend on (data generation up to training): a
changed profile or a changed model never picks up a stale file. ``samllava train --profile P``
(without ``--out``) builds it; a command that needs it trains it on first use, with progress bars,
and says so. An untrained model is never used silently. Training takes a lock (``fcntl.flock`` on a file
beside the model's folder): a second process that asks for the model meanwhile waits, says so, and then
uses what the first one trained.

What it is trained on: the profile's synthetic training set (``samllava make-data``, seed 1; masks
and descriptions), the SAM side first (``train.sam_warmup_steps``), then end to end (Eq. 9), with
``DEFAULT_SHOTS`` normal support images per category so that the region sentences it learns from
come from the same verdict as at inference.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Iterator

import torch

from samllava.core import distributed
from samllava.assets import weights
from samllava.model.checkpoint import CHECKPOINT, load_checkpoint
from samllava.core.config import Profile
from samllava.data import load_dataset
from samllava.model.encoded_data import prepare
from samllava.model.sam_llava import SamLlava, build_model
from samllava.data.synthetic import ensure_synthetic
from samllava.core.results import write_json
from samllava.train.end_to_end import train

DEFAULT_SHOTS = 4  # support images per category while training (the verdict's K at training time)
# Modules whose source the trained weights depend on (the rest, e.g. the command line, notebooks'
# helpers and benchmarks, can change without retraining).
_TRAINED_SOURCES = ("core/config.py", "core/seeding.py", "data", "coarse", "sam", "describe", "model",
                    "train/end_to_end.py", "train/fine_stage.py", "profiles")
DONE = "done.json"


class MissingModelError(RuntimeError):
    """No trained model for the profile and training on first use was not allowed."""


def code_digest() -> str:
    """SHA-256 (12 hex digits) of the package sources the trained weights depend on."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for name in _TRAINED_SOURCES:
        path = root / name
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file() and f.suffix in (".py", ".json"):
                h.update(f.relative_to(root).as_posix().encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


def default_model_dir(profile: Profile) -> Path:
    """``<weights cache>/models/<profile>-<digest of profile, budget and code>``."""
    blob = json.dumps({"profile": profile.to_dict(), "shots": DEFAULT_SHOTS, "code": code_digest()}, sort_keys=True,
                      default=str)
    return weights.cache_dir() / "models" / f"{profile.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def training_lock(out: Path, log=print) -> Iterator[bool]:
    """Hold the lock of the model folder ``out`` (``.<name>.lock`` beside it); wait, saying so, while another
    process holds it. Yields whether it waited. Inside a torchrun process group there is no lock: its ranks
    train one model together."""
    if distributed.world()[1] > 1:
        yield False
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a") as handle:
        waited = False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is training the model in {out}: waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
            waited = True
        try:
            yield waited
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_default(profile: Profile, out: Path | None = None, progress: bool = True, log=print,
                  device: str | torch.device | None = None, micro_batch: int | None = None) -> Path:
    """Train the profile's default model into ``out`` (default :func:`default_model_dir`) on ``device``
    (:func:`samllava.core.device.resolve_device`), unless it is there already; returns its folder.

    Under :func:`training_lock`: a process that waited for another one's training returns its model.
    Interrupted runs resume from the last epoch's checkpoint (:func:`samllava.train.end_to_end.train`); the
    checkpoint holds CPU tensors, so the model serves every device.
    """
    out = Path(out) if out is not None else default_model_dir(profile)
    with training_lock(out, log) as waited:
        if (out / DONE).is_file():
            if waited:
                log(f"the other process trained it: using {out}")
            return out
        return _train_default(profile, out, progress, log, device, micro_batch)


def _train_default(profile: Profile, out: Path, progress: bool, log, device, micro_batch: int | None) -> Path:
    start = time.perf_counter()
    model = build_model(profile, device=device)
    data = load_dataset(ensure_synthetic(profile, seed=1))
    log(f"training the {profile.name} profile's default model on its synthetic training set "
        f"({sum(len(c.test) for c in data.values())} images, K={DEFAULT_SHOTS}) into {out}")
    examples = prepare(model, data, profile.data.image_size, shots=DEFAULT_SHOTS, progress=progress)
    history = train(model, examples, out_dir=out, progress=progress, micro_batch=micro_batch)
    if distributed.world()[0] != 0:
        return out
    write_json(out / DONE, {"profile": profile.name, "steps": len(history), "seconds": time.perf_counter() - start,
                            "shots": DEFAULT_SHOTS, "code": code_digest()})
    return out


def default_checkpoint(profile: Profile, train_if_missing: bool = True, progress: bool = True,
                       log=lambda m: print(m, file=sys.stderr), device: str | torch.device | None = None) -> Path:
    """The default model's checkpoint file, trained now when missing (``train_if_missing``; a process that
    finds another one training it waits and uses that model) or :class:`MissingModelError` with the one
    command that builds it."""
    out = default_model_dir(profile)
    if (out / DONE).is_file():
        return out / CHECKPOINT
    if not train_if_missing:
        raise MissingModelError(f"no trained model for profile {profile.name!r} (looked in {out}); "
                                f"build it with: samllava train --profile {profile.name}")
    log(f"no trained model for profile {profile.name!r} yet: it is trained once, now (a few minutes on a CPU)")
    return train_default(profile, out, progress=progress, log=log, device=device) / CHECKPOINT


def train_on_data(profile: Profile, data_root: str | Path | None, out: str | Path, shots: int = DEFAULT_SHOTS,
                  epochs: int | None = None, progress: bool = True, log=print, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None,
                  micro_batch: int | None = None) -> tuple[SamLlava, list[dict]]:
    """Train on a user's MVTec-layout data (``train/good`` for the support, labelled test images to learn
    from; default: the profile's synthetic training set) into ``out``.

    With masks everywhere the whole method trains (Eq. 9, after the SAM warm-up). With image labels
    alone there is nothing for Eq. 6: L_seg and the warm-up are off, the SAM side starts from the
    default model's (trained on the synthetic masks) and SASA, the projector and LoRA learn the answers.
    ``device``, ``dtype``: :func:`samllava.model.sam_llava.build_model`; ``micro_batch``:
    :func:`samllava.train.train`.
    """
    model = build_model(profile, device=device, dtype=dtype)
    data = load_dataset(data_root if data_root is not None else ensure_synthetic(profile, seed=1))
    if not all(c.has_masks for c in data.values()):
        unmasked = sorted(n for n, c in data.items() if not c.has_masks)
        log(f"no ground-truth masks for {unmasked}: the SAM side is not trained on them (L_seg off); it starts from "
            f"the default model's, and SASA, the projector and LoRA learn the answers")
        load_checkpoint(model, default_checkpoint(profile, progress=progress, log=log, device=device))
        model.profile = profile.replace(**{"train.seg_weight": 0.0, "train.sam_warmup_steps": 0})
    examples = prepare(model, data, profile.data.image_size, shots=shots, progress=progress)
    return model, train(model, examples, epochs=epochs, out_dir=out, progress=progress, micro_batch=micro_batch)
