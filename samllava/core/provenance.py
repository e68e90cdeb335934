"""Where a number came from: the record every table, figure and JSON report carries.

:func:`provenance` is computed once per notebook run (or command) and handed to every writer of
:mod:`samllava.core.results`. It holds

* ``date`` (UTC) and the ``git`` commit of the code, with ``dirty`` set when tracked files other than
  the generated artefacts (``results/``, ``figures/``, ``notebooks/executed/``) differ from it;
* the ``profile`` and which of its components had real weights (``weights``);
* the ``data``: per data set its folder name, file count and a SHA-256 over the file names and bytes
  (:func:`data_digest`), so "synthetic" names one set of images and not any set of that name;
* the ``seeds`` (support seeds, the training seed, the seed of randomly initialised components);
* the ``device`` (CPU model or GPU name, and the CPU thread count, which decides float summation
  order: :mod:`samllava.notebook.runner` fixes it) and the ``versions`` of the packages that compute.

``date`` and ``git`` change from run to run; everything else is fixed for one machine, data set and
seed. Writers put the record in a header (Markdown ``>`` lines, CSV ``#`` lines) or under a
``provenance`` key (JSON), apart from the numbers, so that two runs with one seed give the same table
body byte for byte (see :func:`samllava.core.results.table_body` and docs/reproduction.md).
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from samllava.core.config import Profile, load_profile

REPO_ROOT = Path(__file__).resolve().parents[2]
# Generated artefacts: a run writes them, so they never make the code "dirty".
GENERATED = ("results", "figures", "notebooks/executed")
PACKAGES = {"torch": "torch", "transformers": "transformers", "open_clip": "open_clip_torch",
            "segment-anything": "segment_anything", "timm": "timm", "numpy": "numpy"}
INIT_SEED = 0  # the seed every builder draws random components from (samllava.core.seeding, per component)
VOLATILE = ("date", "git")  # the fields that differ between two runs of one seed on one machine


def provenance(*, profile: Profile | str | Iterable[str] | None = None, data: Any = None,
               seeds: Mapping[str, Any] | Iterable[int] | None = None, device: str | torch.device | None = None,
               note: str = "") -> dict[str, Any]:
    """The provenance record of one run (see the module docstring).

    Args:
        profile: a :class:`~samllava.core.config.Profile`, a profile name, several names (a table over
            profiles), or None.
        data: what :func:`describe_data` accepts: ``{label: data set}``, one data set, or a label string
            for artefacts without a data set.
        seeds: ``{name: value}``; a plain list is taken as the few-shot support seeds. The training seed
            of ``profile`` and :data:`INIT_SEED` are added.
        device: the torch device the numbers were computed on (default CPU).
        note: free text.
    """
    names, weights, train_seeds = _profiles(profile)
    seed_map: dict[str, Any] = {}
    if seeds is not None:
        seed_map.update(dict(seeds) if isinstance(seeds, Mapping) else {"support": list(seeds)})
    seed_map.setdefault("training", train_seeds[0] if len(set(train_seeds)) == 1 else train_seeds or None)
    seed_map.setdefault("random init", INIT_SEED)
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git_state(),
        "profile": ", ".join(names) if names else "none",
        "weights": weights,
        "data": describe_data(data),
        "seeds": {k: v for k, v in seed_map.items() if v is not None},
        "device": device_name(device),
        "versions": package_versions(),
    }
    if note:
        out["note"] = note
    return out


def _profiles(profile) -> tuple[list[str], str, list[int]]:
    """Names, a weights label and training seeds of one or several profiles."""
    if profile is None:
        return [], "none", []
    items = [profile] if isinstance(profile, (Profile, str)) else list(profile)
    names, labels, seeds = [], [], []
    for p in items:
        try:
            p = p if isinstance(p, Profile) else load_profile(p)
        except FileNotFoundError:  # a name that is not a shipped profile (e.g. "paper (config only)")
            names.append(str(p))
            continue
        names.append(p.name)
        label = ", ".join(f"{k}: {v}" for k, v in p.weights_label().items())
        labels.append(label if len(items) == 1 else f"{p.name}: {label}")
        seeds.append(p.train.seed)
    return names, "; ".join(labels) or "none", seeds


# --- the code ---------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the checkout at ``root``; ``"unknown"`` outside git.

    Dirty counts tracked and untracked files outside :data:`GENERATED` (a run rewrites those).
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--", ".", *(f":(exclude){g}" for g in GENERATED))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": "unknown"}
    return {"commit": commit, "dirty": bool(status)}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that compute the numbers (read from metadata, nothing imported)."""
    out = {"python": platform.python_version()}
    for label, dist in PACKAGES.items():
        try:
            out[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[label] = "not installed"
    return out


# --- the machine ------------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :mod:`platform`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str | torch.device | None = None) -> str:
    """``"<GPU name> (cuda:0)"`` or ``"<CPU model>, 2 threads"``: the GPU when one computed, the CPU model and
    torch's thread count otherwise (the thread count decides the order of float sums)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    cpu = f"{cpu_model()}, {torch.get_num_threads()} threads"
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(dev)} ({dev}); CPU {cpu}"
    if dev.type not in ("cpu", "meta"):
        return f"{dev}; CPU {cpu}"
    return cpu


# --- the data -----------------------------------------------------------------------------------------

_DIGESTS: dict[tuple, str] = {}


def files_digest(files: Iterable[Path]) -> tuple[str, int]:
    """SHA-256 over the names (relative to their common folder) and bytes of ``files``; ``(hex, count)``.

    Cached by (name, size, modification time) of every file, so a data set is read once per process."""
    paths = sorted({Path(f).resolve() for f in files})
    if not paths:
        return "empty", 0
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    stats = tuple((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    if stats not in _DIGESTS:
        h = hashlib.sha256()
        for (name, _, _), path in zip(stats, paths):
            h.update(name.encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
        _DIGESTS[stats] = h.hexdigest()
    return _DIGESTS[stats], len(paths)


def data_digest(data: Any) -> dict[str, Any]:
    """``{"folder", "files", "sha256"}`` of one data set: a ``{category: CategoryData}`` mapping or one
    :class:`~samllava.data.CategoryData` (every file in its categories' folders and every image and mask its
    samples name), or a folder (every file in it). The digest is 16 hex digits of SHA-256."""
    if isinstance(data, (str, os.PathLike)):
        root = Path(data)
        files = [p for p in root.rglob("*") if p.is_file()]
    else:  # every file of each category's folder (descriptions included) and every file a sample names
        cats = list(data.values()) if isinstance(data, Mapping) else [data]
        files = [f for c in cats for s in (*c.train, *c.test) for f in (s.image_path, s.mask_path) if f is not None]
        files += [p for c in cats if Path(c.root).is_dir() for p in Path(c.root).rglob("*") if p.is_file()]
        parents = [Path(c.root).resolve().parent for c in cats]  # the data set's folder holds one per category
        root = Path(os.path.commonpath([str(r) for r in parents])) if parents else Path(".")
    digest, n = files_digest(files)
    return {"folder": root.name, "files": n, "sha256": digest[:16] if n else digest}


def describe_data(data: Any) -> dict[str, Any] | str:
    """``{label: data_digest(...)}`` for ``{label: data set}`` (a data set: a ``{category: CategoryData}``
    mapping, a folder as a path or as a string naming a folder); any other string is kept as a label
    (e.g. "none (random inputs)")."""
    if data is None:
        return "none"
    if isinstance(data, str):
        return data
    if isinstance(data, Mapping) and data and all(isinstance(k, str) for k in data) and not _is_dataset(data):
        return {label: (d if isinstance(d, str) and not os.path.isdir(d) else data_digest(d))
                for label, d in data.items()}
    return {"data": data_digest(data)}


def _is_dataset(data: Mapping) -> bool:
    """A ``{category: CategoryData}`` mapping (its values have samples)."""
    return all(hasattr(v, "test") and hasattr(v, "train") for v in data.values())


# --- text ---------------------------------------------------------------------------------------------

def lines(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, text)`` pairs of a record, in a fixed order, for table headers and figure captions."""
    git = record.get("git", {})
    out = [("date", str(record.get("date", "unknown")))]
    if git:
        dirty = " (dirty tree)" if git.get("dirty") is True else ""
        out.append(("commit", f"{git.get('commit', 'unknown')}{dirty}"))
    for key in ("profile", "weights"):
        if key in record:
            out.append((key, str(record[key])))
    if "data" in record:
        out.append(("data", data_text(record["data"])))
    if "seeds" in record:
        out.append(("seeds", "; ".join(f"{k} {v}" for k, v in record["seeds"].items())))
    if "device" in record:
        out.append(("device", str(record["device"])))
    if "versions" in record:
        out.append(("versions", ", ".join(f"{k} {v}" for k, v in record["versions"].items())))
    out += [(k, str(v)) for k, v in record.items()
            if k not in {"date", "git", "profile", "weights", "data", "seeds", "device", "versions"}]
    return out


def data_text(data: Any) -> str:
    """``label (folder, N files, sha256 abcd...)`` for each data set of a record."""
    if isinstance(data, str):
        return data
    return "; ".join(f"{label} ({d['folder']}, {d['files']} files, sha256 {d['sha256']})" if isinstance(d, dict)
                     else f"{label} ({d})" for label, d in data.items())


def caption(record: Mapping[str, Any], note: str = "") -> str:
    """A short provenance caption for a figure: commit, date, profile, data, seeds, device, versions."""
    text = dict(lines(record))
    commit = text.get("commit", "unknown")
    short = commit[:10] + (" (dirty)" if "dirty" in commit else "")
    parts = [f"{text.get('date', '')[:10]} commit {short}", f"profile {text.get('profile', 'none')}",
             f"data {text.get('data', 'none')}", f"seeds {text.get('seeds', 'none')}",
             f"device {text.get('device', 'unknown')}", text.get("versions", "")]
    return " | ".join(p for p in [note, *parts] if p)
