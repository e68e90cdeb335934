"""Where a run's time goes, by kind of work: wall-clock seconds per kind in this process.

``@phase("decoding")`` on a costly function (or ``with phase(...)``) adds its time to that kind. Phases nest
and each second counts once, in the innermost phase: an outer phase's clock stops while an inner one runs
(training that encodes its examples counts the encoding as encoding). The notebook runner
(:mod:`samllava.notebook.runner`) names a file in ``$SAMLLAVA_PHASES`` for each kernel; the totals are written
there as they grow (at most every :data:`WRITE_EVERY` seconds, and when the process exits) and land beside each
notebook's seconds in ``results/reproduce_times.json``. Time outside every phase is the notebook's "other".
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from collections import defaultdict
from pathlib import Path

PHASES_ENV = "SAMLLAVA_PHASES"  # the file this process's totals go to (unset: kept in memory only)
KINDS = ("SAM warm-up", "end-to-end training", "encoding", "decoding", "evaluation inference", "metrics", "figures")
WRITE_EVERY = 5.0  # seconds between two writes of the totals

_totals: dict[str, float] = defaultdict(float)
_open: list[list] = []  # the running phases, innermost last: [kind, start of its current stretch]
_written = [0.0]


class phase(contextlib.ContextDecorator):
    """Count the time inside to ``kind`` (one of :data:`KINDS`), exclusive of the phases nested inside."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"phase {kind!r}: expected one of {KINDS}")
        self.kind = kind

    def __enter__(self) -> "phase":
        now = time.perf_counter()
        if _open:
            _totals[_open[-1][0]] += now - _open[-1][1]
        _open.append([self.kind, now])
        return self

    def __exit__(self, *exc) -> bool:
        now = time.perf_counter()
        kind, start = _open.pop()
        _totals[kind] += now - start
        if _open:
            _open[-1][1] = now
        elif now - _written[0] >= WRITE_EVERY:
            write_totals()
        return False


def totals() -> dict[str, float]:
    """Seconds per kind so far in this process (kinds never entered are absent)."""
    return {k: round(v, 2) for k, v in _totals.items()}


def write_totals(path: str | os.PathLike | None = None) -> Path | None:
    """Write :func:`totals` as JSON to ``path`` (default ``$SAMLLAVA_PHASES``; neither: nothing written).
    Written whole and renamed into place, so a reader never sees half a file."""
    path = path or os.environ.get(PHASES_ENV)
    if not path:
        return None
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(totals()))
    os.replace(tmp, path)
    _written[0] = time.perf_counter()
    return path


def read_totals(path: str | os.PathLike) -> dict[str, float]:
    """The totals a process wrote to ``path`` ({} when it wrote none: no phase ran)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


atexit.register(write_totals)
