"""Run the numbered notebooks headless with papermill, in order.

Each notebook has a cell tagged ``parameters``; :func:`reproduce` injects ``profile`` and
``data_roots`` (a ``{"name": "dir"}`` mapping, e.g. ``{"mvtec": "/data/mvtec"}``) into every one, and
``device`` when one is chosen (each notebook's own default, None, means CUDA when available:
:func:`samllava.core.device.resolve_device`).
Executed copies go to ``notebooks/executed/`` (committed: a reader sees every table and figure in
context), with their run time in the notebook's metadata and their images shrunk to at most
:data:`MAX_IMAGE_WIDTH` pixels; tables and figures go where the notebooks write them (``results/`` and
``figures/`` through :mod:`samllava.core.results`), the run times to ``results/reproduce_times.json``, the
headline numbers to ``results/SUMMARY.md`` (:mod:`samllava.report.summary`) and what they say about each of the
paper's claims to ``results/CLAIMS.md`` (:mod:`samllava.report.claims`); a full run into ``results/`` ends by
comparing every regenerated number with the committed one (``results/REPRODUCTION.md``,
:mod:`samllava.report.reproduction`). The first error stops the run with
a :class:`ReproduceError` that names the notebook and the cell.

A run into the repository's ``results/`` (the committed tables) refuses a working tree with uncommitted changes
outside the generated folders (:func:`check_clean`): every table names its commit, and a table from a dirty
tree cannot be regenerated from any commit. ``allow_dirty`` runs anyway (each table then says "dirty tree").

Every kernel runs with the same number of CPU threads (:func:`pinned_threads`): the thread count decides
the order in which float sums are accumulated, so two runs of one seed on one machine write the same
table bytes (docs/reproduction.md).
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from samllava.core import provenance as prov
from samllava.core import results, timing
from samllava.core.results import REPO_ROOT
from samllava.report.claims import write_claims
from samllava.report.reproduction import REAL_RESULTS, check_run
from samllava.report.summary import write_summary

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# The committed executed copies are the default run's: another run (CI's smoke run) points this elsewhere.
EXECUTED_DIR = Path(os.environ.get("SAMLLAVA_EXECUTED_DIR") or NOTEBOOK_DIR / "executed")
_NUMBERED = re.compile(r"^(\d{2})_.+\.ipynb$")


# Parameters that make each notebook a quick smoke run (used with the tiny profile in CI):
# fewer seeds, shots and steps; the code path is the same (two training seeds: the pooling over runs included).
SMOKE_PARAMETERS: dict[str, dict] = {
    "02": {"shots": [1], "seeds": [0], "n_examples": 2},
    "03": {"steps": 10, "seeds": [0], "n_examples": 2, "train_seeds": [0, 1]},
    "04": {"count_profiles": ["tiny"], "max_new_tokens": 4},
    "05": {"max_new_tokens": 4, "n_show": 1, "train_seeds": [0, 1]},
    "06": {"steps": 5, "train_seeds": [0, 1]},
    "07": {"shots": [1], "seeds": [0], "steps": 5, "train_seeds": [0, 1]},
    "08": {"shots": [1], "seeds": [0], "max_new_tokens": 4, "words_shots": 1, "train_seeds": [0, 1]},
    "09": {"steps": 5, "n_examples": 2},
    "10": {"steps": 3, "seeds": [0], "accuracy_variants": ["SAM-LLaVA (full)"], "train_seeds": [0, 1]},
    "11": {"runs": 1, "warmup": 1, "new_tokens": 2},
}


THREADS_ENV = "SAMLLAVA_THREADS"  # CPU threads of every kernel (default: this process's torch thread count)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
MAX_IMAGE_WIDTH = 800  # pixels: executed notebooks' figures are shrunk to this width
TIMES_FILE = "reproduce_times.json"


class ReproduceError(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


@dataclass
class NotebookRun:
    notebook: str
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # seconds per kind of work (samllava.core.timing)


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


@contextlib.contextmanager
def pinned_threads(threads: int | None = None) -> Iterator[int]:
    """Kernels started inside the block use ``threads`` CPU threads (``$SAMLLAVA_THREADS``, else this
    process's torch default, the machine's physical cores), whatever the load: OpenMP and MKL read the
    variables when a kernel starts. ``MKL_DYNAMIC=FALSE`` keeps MKL from choosing fewer on its own."""
    n = int(threads or os.environ.get(THREADS_ENV) or torch.get_num_threads())
    names = (*THREAD_VARIABLES, "MKL_DYNAMIC")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({**{k: str(n) for k in THREAD_VARIABLES}, "MKL_DYNAMIC": "FALSE"})
    try:
        yield n
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def shrink_images(path: Path, max_width: int = MAX_IMAGE_WIDTH) -> int:
    """Re-encode every PNG output of the notebook at ``path`` at most ``max_width`` pixels wide; returns
    the bytes saved."""
    from PIL import Image  # Pillow (a matplotlib dependency), only when notebooks are written

    nb = json.loads(path.read_text())
    before = path.stat().st_size
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" not in data:
                continue
            raw = data["image/png"]
            img = Image.open(io.BytesIO(base64.b64decode("".join(raw) if isinstance(raw, list) else raw)))
            if img.width > max_width:
                img = img.resize((max_width, max(1, round(img.height * max_width / img.width))), Image.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, format="PNG", optimize=True)
            data["image/png"] = base64.b64encode(buf.getvalue()).decode()
            out.get("metadata", {}).pop("image/png", None)  # a stale display size
    results.write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return before - path.stat().st_size


def record_run(path: Path, run: NotebookRun, threads: int, profile: str, smoke: bool) -> None:
    """Put the notebook's run time, its time per kind of work and the machine into its metadata
    (``metadata.samllava``)."""
    nb = json.loads(path.read_text())
    nb.setdefault("metadata", {})["samllava"] = {
        "seconds": round(run.seconds, 1), "phases": with_other(run), "profile": profile, "smoke": smoke,
        "cpu": prov.cpu_model(), "threads": threads}
    results.write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def with_other(run: NotebookRun) -> dict[str, float]:
    """The notebook's seconds per kind of work, the rest (kernel start, data, metrics, tables) as "other"."""
    other = run.seconds - sum(run.phases.values())
    return {**{k: round(v, 1) for k, v in run.phases.items()}, "other": round(max(other, 0.0), 1)}


def write_times(runs: list["NotebookRun"], threads: int, profile: str, smoke: bool, directory: Path | None = None
                ) -> Path:
    """``results/reproduce_times.json``: seconds per notebook and, per notebook and in all, per kind of work
    (:mod:`samllava.core.timing`; those of an earlier run of the same profile and budget are kept for notebooks
    not run now), the CPU model and thread count."""
    path = Path(directory or results.RESULTS_DIR) / TIMES_FILE
    seconds: dict[str, float] = {}
    phases: dict[str, dict[str, float]] = {}
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("profile") == profile and old.get("smoke") == smoke:
            seconds, phases = dict(old.get("seconds", {})), dict(old.get("phases", {}))
            phases = {nb: phases[nb] for nb in seconds if nb in phases}
    seconds.update({r.notebook: round(r.seconds, 1) for r in runs})
    phases.update({r.notebook: with_other(r) for r in runs})
    seconds, phases = dict(sorted(seconds.items())), dict(sorted(phases.items()))
    by_kind: dict[str, float] = {}
    for per in phases.values():
        for k, v in per.items():
            by_kind[k] = round(by_kind.get(k, 0.0) + v, 1)
    report = {"profile": profile, "smoke": smoke, "cpu": prov.cpu_model(), "threads": threads,
              "seconds": seconds, "total_s": round(sum(seconds.values()), 1), "phases": phases,
              "phases_total_s": dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))}
    return results.write_json(path, report, run=prov.provenance(profile=profile))


def tree_state() -> dict:
    """``{"commit", "dirty"}`` of the checkout now (:func:`samllava.core.provenance.git_state`, uncached)."""
    return prov.git_state.__wrapped__(REPO_ROOT)


def check_clean(results_dir: Path | None, allow_dirty: bool, log=print) -> None:
    """Refuse (:class:`ReproduceError`) a run into the repository's ``results/`` from a working tree with
    uncommitted changes outside the generated folders (:func:`tree_state`), unless ``allow_dirty``. A run into
    another folder (CI's smoke run, tests) writes no committed table and is not checked; outside git nothing can be."""
    if Path(results_dir or results.RESULTS_DIR).resolve() != REAL_RESULTS.resolve():
        return
    if tree_state().get("dirty") is not True:
        return
    if not allow_dirty:
        raise ReproduceError("the working tree has uncommitted changes outside results/, figures/ and "
                             "notebooks/executed/ (git status): the committed tables must come from a commit. Commit "
                             "or stash them, or run with --allow-dirty (every table then says 'dirty tree')")
    log("[reproduce] running on a dirty tree (allow_dirty): every table records '(dirty tree)'")


def reproduce(profile: str = "offline", only: list[str] | None = None, data_roots: dict[str, str] | None = None,
              directory: Path | None = None, output_dir: Path | None = None, extra_parameters: dict | None = None,
              kernel_name: str = "python3", smoke: bool = False, cell_timeout: int = 3600,
              log=print, device: str | None = None, threads: int | None = None,
              results_dir: Path | None = None, allow_dirty: bool = False) -> list[NotebookRun]:
    """Execute the notebooks; returns one :class:`NotebookRun` per notebook.

    ``smoke`` adds :data:`SMOKE_PARAMETERS` (small budgets) to each notebook's parameters.
    ``cell_timeout`` (seconds) turns a cell that never answers into an error naming it. ``threads``: CPU
    threads of every kernel (:func:`pinned_threads`). ``allow_dirty``: run into the repository's ``results/``
    from a dirty tree (:func:`check_clean`). Afterwards the run times go to ``results/reproduce_times.json``,
    the headline numbers to ``results/SUMMARY.md`` and the claims to ``results/CLAIMS.md`` (``results_dir``:
    another folder than :data:`samllava.core.results.RESULTS_DIR`, where the notebooks write their tables). A run
    that is not a smoke run and writes into the repository's ``results/`` then writes ``results/REPRODUCTION.md``
    (:func:`samllava.report.reproduction.write_reproduction`: its numbers against the committed ones).
    """
    check_clean(results_dir, allow_dirty, log=log)
    directory, output_dir = directory or NOTEBOOK_DIR, output_dir or EXECUTED_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "data_roots": dict(data_roots or {}), **(extra_parameters or {})}
    if device is not None:
        params["device"] = device
    runs = []
    with pinned_threads(threads) as n_threads:
        for nb in numbered_notebooks(directory, only):
            on = f", device={device}" if device is not None else ""
            log(f"[reproduce] {nb.name} (profile={profile}, {n_threads} threads{on})")
            nb_params = {**params, **(SMOKE_PARAMETERS.get(nb.name[:2], {}) if smoke else {})}
            runs.append(_execute(nb, output_dir / nb.name, nb_params, kernel_name, directory, cell_timeout))
            record_run(output_dir / nb.name, runs[-1], n_threads, profile, smoke)
            shrink_images(output_dir / nb.name)
            log(f"[reproduce] {nb.name} done in {runs[-1].seconds:.1f} s")
    write_times(runs, n_threads, profile, smoke, results_dir)
    log(f"[reproduce] headline numbers: {write_summary(results_dir)}")
    log(f"[reproduce] the paper's claims: {write_claims(results_dir)}")
    check_run(results_dir, smoke=smoke, threads=n_threads, log=log)  # results/REPRODUCTION.md
    return runs


def _execute(nb: Path, out: Path, parameters: dict, kernel_name: str, cwd: Path, cell_timeout: int) -> NotebookRun:
    """One notebook through papermill; :class:`ReproduceError` names the failing cell."""
    import papermill as pm  # heavy (Jupyter stack), only for running notebooks
    from papermill.exceptions import PapermillExecutionError  # heavy, as above

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="samllava-phases-") as scratch:
        phases = Path(scratch) / "phases.json"  # the kernel's seconds per kind of work (samllava.core.timing)
        saved = os.environ.get(timing.PHASES_ENV)
        os.environ[timing.PHASES_ENV] = str(phases)  # the kernel inherits it
        try:
            pm.execute_notebook(str(nb), str(out), parameters=parameters, kernel_name=kernel_name, cwd=str(cwd),
                                progress_bar=False, log_output=False, execution_timeout=cell_timeout)
        except PapermillExecutionError as e:
            raise ReproduceError(f"{nb.name}: cell {e.exec_count} failed: {e.ename}: {e.evalue}") from None
        finally:
            if saved is None:
                os.environ.pop(timing.PHASES_ENV, None)
            else:
                os.environ[timing.PHASES_ENV] = saved
        return NotebookRun(nb.name, time.perf_counter() - start, timing.read_totals(phases))
