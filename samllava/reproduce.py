"""Run the numbered notebooks headless with papermill, in order.

Each notebook has a cell tagged ``parameters``; :func:`reproduce` injects ``profile`` and
``data_roots`` (a ``{"name": "dir"}`` mapping, e.g. ``{"mvtec": "/data/mvtec"}``) into every one, and
``device`` when one is chosen (each notebook's own default, None, means CUDA when available:
:func:`samllava.device.resolve_device`).
Executed copies go to ``notebooks/executed/``; tables and figures go where the notebooks write them
(``results/`` and ``figures/`` through :mod:`samllava.results`). The first error stops the run with
a :class:`ReproduceError` that names the notebook and the cell.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from .results import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = NOTEBOOK_DIR / "executed"
_NUMBERED = re.compile(r"^(\d{2})_.+\.ipynb$")


# Parameters that make each notebook a quick smoke run (used with the tiny profile in CI):
# fewer seeds, shots and steps; the code path is the same.
SMOKE_PARAMETERS: dict[str, dict] = {
    "02": {"shots": [1], "seeds": [0], "n_examples": 2},
    "03": {"steps": 10, "seeds": [0], "n_examples": 2},
    "04": {"count_profiles": ["tiny"], "max_new_tokens": 4},
    "05": {"max_new_tokens": 4, "n_show": 1},
    "06": {"steps": 5},
    "07": {"shots": [1], "seeds": [0], "steps": 5},
    "08": {"shots": [1], "seeds": [0], "max_new_tokens": 4},
    "09": {"steps": 5, "n_examples": 2},
    "10": {"steps": 3, "seeds": [0], "accuracy_variants": ["w/o SASA"]},
    "11": {"runs": 1, "warmup": 1, "new_tokens": 2},
}


class ReproduceError(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


@dataclass
class NotebookRun:
    notebook: str
    seconds: float


def numbered_notebooks(directory: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """The ``NN_name.ipynb`` notebooks in order; ``only`` keeps those whose number or name matches."""
    directory = directory or NOTEBOOK_DIR
    books = sorted(p for p in directory.glob("*.ipynb") if _NUMBERED.match(p.name))
    if only:
        wanted = {o.strip() for o in only}
        books = [p for p in books if p.name[:2] in wanted or p.stem in wanted or p.name in wanted]
        if not books:
            raise ReproduceError(f"--only {sorted(wanted)} matches no notebook in {directory}")
    return books


def reproduce(profile: str = "offline", only: list[str] | None = None, data_roots: dict[str, str] | None = None,
              directory: Path | None = None, output_dir: Path | None = None, extra_parameters: dict | None = None,
              kernel_name: str = "python3", smoke: bool = False, cell_timeout: int = 3600,
              log=print, device: str | None = None) -> list[NotebookRun]:
    """Execute the notebooks; returns one :class:`NotebookRun` per notebook.

    ``smoke`` adds :data:`SMOKE_PARAMETERS` (small budgets) to each notebook's parameters.
    ``cell_timeout`` (seconds) turns a cell that never answers into an error naming it.
    """
    import papermill as pm  # heavy (Jupyter stack), only for running notebooks
    from papermill.exceptions import PapermillExecutionError  # heavy, as above

    directory, output_dir = directory or NOTEBOOK_DIR, output_dir or EXECUTED_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "data_roots": dict(data_roots or {}), **(extra_parameters or {})}
    if device is not None:
        params["device"] = device
    runs = []
    for nb in numbered_notebooks(directory, only):
        log(f"[reproduce] {nb.name} (profile={profile}" + (f", device={device})" if device is not None else ")"))
        start = time.perf_counter()
        nb_params = {**params, **(SMOKE_PARAMETERS.get(nb.name[:2], {}) if smoke else {})}
        try:
            pm.execute_notebook(
                str(nb),
                str(output_dir / nb.name),
                parameters=nb_params,
                kernel_name=kernel_name,
                cwd=str(directory),
                progress_bar=False,
                log_output=False,
                execution_timeout=cell_timeout,
            )
        except PapermillExecutionError as e:
            raise ReproduceError(f"{nb.name}: cell {e.exec_count} failed: {e.ename}: {e.evalue}") from None
        runs.append(NotebookRun(nb.name, time.perf_counter() - start))
        log(f"[reproduce] {nb.name} done in {runs[-1].seconds:.1f} s")
    return runs
