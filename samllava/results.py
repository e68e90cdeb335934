"""Writing tables, figures and JSON reports atomically.

Every writer goes to a temporary file in the destination folder and renames it into place
(``os.replace`` is atomic on POSIX), so a killed run leaves either the old file or the new one,
never half a file. Tables carry their provenance: profile, data set and whether the numbers came
from random or stand-in weights, beside the paper's reported values where there are some.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from .config import load_profile

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(os.environ.get("SAMLLAVA_RESULTS_DIR", REPO_ROOT / "results"))
FIGURES_DIR = Path(os.environ.get("SAMLLAVA_FIGURES_DIR", REPO_ROOT / "figures"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def provenance(profile: str, dataset: str, note: str = "") -> dict[str, str]:
    """The header every table carries."""
    try:
        weights = load_profile(profile).weights_label()
        w = ", ".join(f"{k}: {v}" for k, v in weights.items())
    except FileNotFoundError:
        w = "unknown profile"
    out = {"profile": profile, "dataset": dataset, "weights": w}
    if note:
        out["note"] = note
    return out


def write_table(df: pd.DataFrame, name: str, *, profile: str, dataset: str, note: str = "",
                directory: str | os.PathLike | None = None, float_format: str = "{:.1f}") -> dict[str, Path]:
    """Write ``results/<name>.csv`` and ``results/<name>.md`` with a provenance header.

    The CSV starts with ``# key: value`` comment lines (read back with ``pd.read_csv(...,
    comment="#")``); the Markdown has the same lines above the table.
    """
    directory = Path(directory or RESULTS_DIR)
    head = provenance(profile, dataset, note)
    comment = "".join(f"# {k}: {v}\n" for k, v in head.items())
    csv = comment + df.to_csv(index=False)
    shown = df.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "n/a" if pd.isna(v) else float_format.format(v))
    md = "".join(f"> **{k}**: {v}  \n" for k, v in head.items()) + "\n" + _markdown(shown) + "\n"
    return {"csv": write_text(directory / f"{name}.csv", csv), "md": write_text(directory / f"{name}.md", md)}


def _markdown(df: pd.DataFrame) -> str:
    # pandas.to_markdown needs `tabulate`; a plain pipe table needs nothing.
    cols = [str(c) for c in df.columns]
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    rows += ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path, comment="#")


def save_figure(fig, name: str, *, directory: str | os.PathLike | None = None, dpi: int = 120) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` atomically."""
    path = Path(directory or FIGURES_DIR) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path
