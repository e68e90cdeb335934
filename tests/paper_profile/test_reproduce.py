"""``samllava reproduce --profile <paper> --smoke`` over MVTec- and VisA-layout folders: every notebook, on files in
the official formats at tiny widths (``PaperFiles.tiny()``, the files of ``benchmarks/paper_size_cpu.py --tiny``),
resolved through the weights' environment variables.

Why tiny widths here: the notebooks answer questions about a few hundred images (the synthetic sets, textiles, real
textures, per training seed), each answer a prefill of about 1,000 tokens; at Vicuna's width that is a GPU's work.
The files at the paper's widths run diagnose, train and evaluate (test_commands.py). The profile is the paper's
with the tiny architectures (``PaperFiles.profile``) and smaller budgets: ``train.epochs`` 1 (paper: 50),
``data.synthetic_images`` 8 and ``data.synthetic_train`` 4 per category (paper: 24 and 8).
"""
import json

import pytest

from paper_files import PaperFiles, write_all  # benchmarks/paper_files.py
from samllava.cli import main
from samllava.core import results
from samllava.data import generate_mvtec_miniature, generate_visa_miniature
from samllava.notebook.runner import EXECUTED_DIR, numbered_notebooks
from tests.paper_profile.conftest import write_profile

BUDGETS = {"train.epochs": 1, "data.synthetic_images": 8, "data.synthetic_train": 4}


@pytest.mark.slow
def test_reproduce_smoke_runs_every_notebook(isolated, tmp_path, monkeypatch):
    files = write_all(PaperFiles.tiny(), tmp_path / "files")
    for variable, part in (("SAMLLAVA_CLIP_VIT_B16", "clip"), ("SAMLLAVA_SAM_VIT_H", "sam"),
                           ("SAMLLAVA_LLAVA_7B", "llava")):
        monkeypatch.setenv(variable, str(files[part]))
    profile = write_profile(PaperFiles.tiny().profile().replace(**BUDGETS), tmp_path / "paper_tiny.json")
    mvtec = generate_mvtec_miniature(tmp_path / "mvtec")
    visa = generate_visa_miniature(tmp_path / "visa")
    assert main(["reproduce", "--profile", str(profile), "--smoke", "--data-root", f"mvtec={mvtec}",
                 "--data-root", f"visa={visa}", "--device", "cpu"]) == 0
    books = numbered_notebooks()
    for book in books:
        meta = json.loads((EXECUTED_DIR / book.name).read_text())["metadata"]["samllava"]
        assert meta["profile"] == str(profile) and meta["smoke"]
    times = json.loads((results.RESULTS_DIR / "reproduce_times.json").read_text())
    assert len(times["seconds"]) == len(books)
    assert "paper" in (results.RESULTS_DIR / "SUMMARY.md").read_text()
