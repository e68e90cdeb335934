"""The runner without torch: its file handling is diagnose's, it runs where torch cannot be imported (in a
process that forbids it; in a fresh virtual environment holding numpy, pillow and onnxruntime alone), and
its errors are one line."""
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from samllava.diagnose import files as diagnose_files
from samllava.export import runner
from tests.export.conftest import check_parity, diagnoser_for

ROOT = Path(__file__).resolve().parents[2]
# what the runner must never import: torch and the libraries of the torch side
FORBIDDEN = ("torch", "torchvision", "open_clip", "timm", "transformers", "segment_anything", "scipy", "skimage",
             "pandas", "sklearn")


def test_images_and_names_are_found_as_diagnose_finds_them(held_out):
    paths = [held_out[0] / "test", held_out[1] / "test", held_out[0] / "test" / "good"]
    found = runner.gather_images(paths)
    assert found == diagnose_files.gather_images(paths)
    assert runner.output_names(found) == diagnose_files.output_names(found)


def _run(python: str, args: list[str], env: dict | None = None, forbid: bool = False) -> subprocess.CompletedProcess:
    code = "import sys\n"
    if forbid:  # an import of any of these now fails at once
        code += "".join(f"sys.modules[{name!r}] = None\n" for name in FORBIDDEN)
    code += ("from samllava.export.runner import main\nrc = main(sys.argv[1:])\n"
             "assert not [m for m in sys.modules if m.split('.')[0] in "
             f"{FORBIDDEN!r} and sys.modules[m] is not None], 'imported the torch side'\nsys.exit(rc)\n")
    return subprocess.run([python, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_the_runner_never_imports_torch(tiny_export, held_out, tmp_path):
    model, _ = tiny_export
    run = _run(sys.executable, [str(model), str(held_out[0] / "test"), "--out", str(tmp_path / "out")], forbid=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / runner.SUMMARY).is_file() and "judged defective" in run.stdout


def test_errors_are_one_line(tiny_export, held_out, tmp_path):
    model, _ = tiny_export
    (tmp_path / "bad.png").write_bytes(b"not a png")
    cases = [([str(tmp_path / "none.onnx"), str(held_out[0] / "test")], "missing"),
             ([str(model), str(tmp_path / "bad.png")], "not a readable image"),
             ([str(model), str(tmp_path / "nope")], "no such file or folder"),
             ([str(model), str(held_out[0] / "test"), "--batch-size", "0"], "--batch-size")]
    for args, message in cases:
        run = _run(sys.executable, [*args, "--out", str(tmp_path / "out")])
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr


@pytest.mark.slow
def test_a_fresh_environment_with_onnxruntime_alone_diagnoses_as_samllava_diagnose(tiny, tiny_export, held_out,
                                                                                   support_cache, tmp_path):
    model, record = tiny_export
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True, clear=True)
    python = str(env_dir / "bin" / "python")
    pins = ["numpy==2.4.6", "pillow==13.0.0", "onnxruntime==1.31.1"]  # requirements.txt's
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", *pins], capture_output=True, text=True,
                             timeout=600)
    if install.returncode != 0:
        pytest.skip(f"cannot install {pins} from PyPI here: {install.stderr.strip().splitlines()[-1:]}")
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, timeout=60)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    files = runner.gather_images([held_out[0] / "test"])
    run = _run(python, [str(model), *map(str, files), "--out", str(tmp_path / "onnx")],
               env={"PYTHONNOUSERSITE": "1"})
    assert run.returncode == 0, run.stderr
    diagnoser_for(tiny, Path(record["support"]["folder"])).run(files, tmp_path / "torch", max_new_tokens=2,
                                                                progress=False)
    check_parity(tmp_path / "torch", tmp_path / "onnx", files)
