"""Writing tables, figures and JSON reports atomically, each with its provenance.

Every writer goes to a temporary file in the destination folder and renames it into place
(``os.replace`` is atomic on POSIX), so a killed run leaves either the old file or the new one,
never half a file. Every artefact carries the record of :func:`samllava.core.provenance.provenance`
(date, commit, profile and weights, data digest, seeds, device, package versions):

* Markdown tables: ``> **key**: value`` lines, a blank line, then the table;
* CSV tables: ``# key: value`` lines, then the table (read back with :func:`read_table`);
* JSON reports: a ``provenance`` key;
* figures: a caption line drawn under the image.

The record sits apart from the numbers, so :func:`table_body` (the bytes without it) is the same for two
runs of one seed on one machine. Cells under a "paper" header hold only the paper's numbers: a row this
run computed leaves them empty (``NaN`` in the frame, an empty cell in both files).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from samllava.core import provenance as prov
from samllava.core.timing import phase

if TYPE_CHECKING:
    import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path(os.environ.get("SAMLLAVA_RESULTS_DIR", REPO_ROOT / "results"))
FIGURES_DIR = Path(os.environ.get("SAMLLAVA_FIGURES_DIR", REPO_ROOT / "figures"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success, with the mode a
    plain ``open(path, "w")`` would give (``mkstemp`` makes its files private, 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        user_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def user_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (``mkstemp``/``mkdtemp`` make it private)."""
    umask = os.umask(0o022)  # reading the umask means setting it: set it back at once
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, *, run: dict | None = None) -> Path:
    """Write ``data`` as JSON; a dict gets a ``provenance`` key (``run``, or the machine and code record of
    :func:`samllava.core.provenance.provenance` when none is given) unless it has one."""
    if isinstance(data, dict) and "provenance" not in data:
        data = {"provenance": run if run is not None else prov.provenance(), **data}
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def header(run: dict | None = None, *, profile=None, dataset: str = "", note: str = "", data=None,
           seeds=None) -> list[tuple[str, str]]:
    """The ``(key, text)`` lines above a table: ``run`` (computed from ``profile`` when None) with ``data``
    and ``seeds`` replacing its own where given, the data set's label and the note."""
    run = dict(run) if run is not None else prov.provenance(profile=profile)
    if data is not None:
        run["data"] = prov.describe_data(data)
    if seeds is not None:
        run["seeds"] = {**run.get("seeds", {}), **prov.provenance(seeds=seeds)["seeds"]}
    pairs = prov.lines(run)
    if dataset:
        at = next((i for i, (k, _) in enumerate(pairs) if k == "data"), len(pairs))
        pairs.insert(at, ("dataset", dataset))
    if note:
        pairs.append(("note", note))
    return pairs


def write_table(df: pd.DataFrame, name: str, *, profile=None, dataset: str = "", note: str = "",
                run: dict | None = None, data=None, seeds=None, directory: str | os.PathLike | None = None,
                float_format: str = "{:.1f}") -> dict[str, Path]:
    """Write ``results/<name>.csv`` and ``results/<name>.md``, each with the provenance header of :func:`header`.

    The CSV starts with ``# key: value`` comment lines (read back with :func:`read_table`); the Markdown
    has ``> **key**: value`` lines above the table. A missing number prints "n/a", except under a
    header naming the paper, where the cell stays empty (a row this run computed has no paper number).
    """
    directory = Path(directory or RESULTS_DIR)
    head = header(run, profile=profile, dataset=dataset, note=note, data=data, seeds=seeds)
    comment = "".join(f"# {k}: {_one_line(v)}\n" for k, v in head)
    csv = comment + df.to_csv(index=False)
    md = "".join(f"> **{k}**: {_one_line(v)}  \n" for k, v in head) + "\n" + _markdown(_shown(df, float_format)) + "\n"
    return {"csv": write_text(directory / f"{name}.csv", csv), "md": write_text(directory / f"{name}.md", md)}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def is_paper_column(column: str) -> bool:
    """A column that holds the paper's numbers ("SAM-LLaVA (paper)", "paper MVTec image", ...)."""
    return "paper" in str(column).lower()


def _shown(df: pd.DataFrame, float_format: str) -> pd.DataFrame:
    import pandas as pd  # here, not at the top: the atomic writers above serve `samllava diagnose`, which has no table
    shown = df.copy()
    for col in shown.columns:
        missing = "" if is_paper_column(col) else "n/a"
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v, m=missing: m if pd.isna(v) else float_format.format(v))
        elif shown[col].isna().any():
            shown[col] = shown[col].astype(object).map(lambda v, m=missing: m if pd.isna(v) else v)
    return shown


def _markdown(df: pd.DataFrame) -> str:
    # pandas.to_markdown needs `tabulate`; a plain pipe table needs nothing.
    cols = [str(c) for c in df.columns]
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    rows += ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    import pandas as pd  # here, not at the top: see _shown

    return pd.read_csv(path, comment="#")


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """The provenance lines of a table written by :func:`write_table` (``.md`` or ``.csv``) as ``{key: text}``."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("# ") and ": " in line:
            key, _, value = line[2:].partition(": ")
        elif line.startswith("> **") and "**: " in line:
            key, _, value = line[4:].partition("**: ")
        elif not line.strip() or not (line.startswith("#") or line.startswith(">")):
            break
        else:
            continue
        out[key] = value.rstrip()
    return out


def table_body(path: str | os.PathLike) -> bytes:
    """The bytes of an artefact without its provenance: a table's lines after its header, a JSON report
    without its ``provenance`` key. Equal for two runs of one seed on one machine."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            data.pop("provenance", None)
        return json.dumps(data, indent=2).encode()
    text = path.read_text().splitlines(keepends=True)
    head = 0
    while head < len(text) and (text[head].startswith("# ") or text[head].startswith("> ")):
        head += 1
    if path.suffix == ".md" and head < len(text) and not text[head].strip():
        head += 1
    return "".join(text[head:]).encode()


CAPTION_POINTS = 6.0  # font size of the provenance caption under a figure


@phase("figures")
def save_figure(fig, name: str, *, run: dict | None = None, note: str = "",
                directory: str | os.PathLike | None = None, dpi: int = 120) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` atomically, with the provenance caption of ``run``
    (:func:`samllava.core.provenance.caption`; ``note`` first, e.g. "not comparable with the paper") drawn under it."""
    path = Path(directory or FIGURES_DIR) / f"{name}.png"
    run = run if run is not None else prov.provenance()
    width_in = fig.get_size_inches()[0]
    chars = max(60, int(width_in * 72 / (0.55 * CAPTION_POINTS)))  # ~ characters per line at this font size
    text = "\n".join(textwrap.wrap(prov.caption(run, note), chars))
    label = fig.text(0.0, 0.0, text, ha="left", va="top", fontsize=CAPTION_POINTS, family="monospace",
                     color="0.25", transform=fig.transFigure)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png", metadata={"Software": None})
    finally:
        label.remove()  # the figure object stays as the caller made it (notebooks display it afterwards)
    return path
