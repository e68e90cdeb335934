"""Every path, folder and number is checked before a model is loaded or trained: each wrong argument is one
line, ``samllava <command>: --option VALUE: what is wrong``, exit status 2."""
import subprocess
import sys

import pytest
from PIL import Image

from samllava.cli import COMMANDS, main, resolve
from samllava.cli.checks import CHECKS, output_file, output_folder, UsageError

# what would load, build or train a model: refused while the arguments are being checked
GUARDED = ("load_model", "default_checkpoint", "build_model", "train_default", "train_on_data", "build_describer")
NOT_THERE = "/proc/samllava-nope"  # a folder nobody can create


@pytest.fixture
def no_model(monkeypatch):
    """Every command imported, and every function that loads or trains a model replaced by a refusal."""
    for target in COMMANDS.values():
        resolve(target)

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    for name, module in list(sys.modules.items()):
        if name.startswith("samllava") and module is not None:
            for attr in GUARDED:
                if callable(getattr(module, attr, None)):
                    monkeypatch.setattr(module, attr, refuse)


@pytest.fixture
def files(tmp_path):
    """An image, a folder of normal images, an empty folder and a folder with a stray file."""
    (tmp_path / "normals").mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (100 + i, 90, 80)).save(tmp_path / "normals" / f"{i}.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "one.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("x")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    return tmp_path


def _fails(capsys, args, *parts):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"samllava {args[0]}: "), err
    for part in parts:
        assert part in err, err
    return err


def test_diagnose_errors_name_the_option(no_model, files, capsys):
    d = str(files)
    base = ["diagnose", f"{d}/one.png", "--profile", "tiny", "--out", f"{d}/out"]
    normals = ["--support", f"{d}/normals"]
    _fails(capsys, ["diagnose", f"{d}/one.png", *normals, "--out", NOT_THERE + "/x"],
           f"--out {NOT_THERE}/x: cannot create folder")
    _fails(capsys, [*base], "no zero-shot signal", "--support DIR")
    _fails(capsys, [*base, "--support", f"{d}/empty"], f"--support {d}/empty: holds no images")
    _fails(capsys, [*base, "--support", f"{d}/stray"], f"--support {d}/stray: ", "not an image file")
    _fails(capsys, [*base, "--support", f"{d}/nope"], f"--support {d}/nope: no such folder")
    _fails(capsys, [*base, "--support", f"{d}/one.png"], f"--support {d}/one.png: not a folder")
    _fails(capsys, [*base, *normals, "--calibration", f"{d}/empty"], f"--calibration {d}/empty: holds no images")
    _fails(capsys, [*base, "--calibration", f"{d}/normals"], "--calibration", "give --support")
    _fails(capsys, ["diagnose", f"{d}/nope.png", *normals, "--out", f"{d}/o"], f"IMAGE {d}/nope.png: no such file")
    _fails(capsys, ["diagnose", f"{d}/bad.png", *normals, "--profile", "tiny", "--out", f"{d}/o"],
           "bad.png: not a readable image")
    _fails(capsys, [*base, *normals, "--checkpoint", f"{d}/none.pt"], f"--checkpoint {d}/none.pt: no such")
    _fails(capsys, [*base, *normals, "--profile", "nope"], "--profile nope: ", "known profiles")
    _fails(capsys, [*base, *normals, "--dtype", "int8"], "--dtype int8: ", "floating")
    _fails(capsys, [*base, *normals, "--device", "cuda:7"], "--device cuda:7: ")
    (files / "taken").write_text("a file")
    _fails(capsys, [*base[:-2], *normals, "--out", f"{d}/taken"], f"--out {d}/taken: a file is there")


def test_other_commands_check_first(no_model, files, capsys):
    d = str(files)
    _fails(capsys, ["evaluate", "--data", f"{d}/nope", "--out", f"{d}/r.json"], f"--data {d}/nope: no such folder")
    _fails(capsys, ["evaluate", "--data", f"{d}/empty", "--shots", "1", "--profile", "tiny", "--out", f"{d}/r.json"],
           f"--data {d}/empty: ")
    _fails(capsys, ["evaluate", "--data", d, "--profile", "tiny", "--out", f"{d}/r.json"], "no zero-shot signal")
    _fails(capsys, ["evaluate", "--data", d, "--shots", "1", "--out", d], f"--out {d}: a folder")
    _fails(capsys, ["evaluate", "--data", d, "--shots", "1", "--out", f"{NOT_THERE}/r.json"], "--out ")
    _fails(capsys, ["train", "--data", f"{d}/nope", "--out", f"{d}/run"], f"--data {d}/nope: no such folder")
    _fails(capsys, ["train", "--data", f"{d}/empty", "--out", f"{d}/run"], f"--data {d}/empty: ")
    _fails(capsys, ["train", "--epochs", "2"], "--out is needed")
    _fails(capsys, ["train", "--out", NOT_THERE], f"--out {NOT_THERE}: cannot create folder")
    _fails(capsys, ["fetch-data", "mvtec", "--from-archive", f"{d}/none.tar"], f"--from-archive {d}/none.tar: no such")
    _fails(capsys, ["fetch-data", "visa", "--out", NOT_THERE], f"--out {NOT_THERE}: cannot create folder")
    _fails(capsys, ["fetch-weights", "--dir", NOT_THERE], f"--dir {NOT_THERE}: cannot create folder")
    _fails(capsys, ["make-data", "--out", NOT_THERE], f"--out {NOT_THERE}: cannot create folder")
    _fails(capsys, ["bench", "--profile", "tiny", "--out", f"{NOT_THERE}/b.json"], "--out ")
    _fails(capsys, ["reproduce", "--data-root", "mvtec"], "--data-root mvtec: expected NAME=DIR")
    _fails(capsys, ["reproduce", "--data-root", f"mvtec={d}/nope"], f"--data-root {d}/nope: no such folder")
    _fails(capsys, ["compare-results", d, f"{d}/nope"], f"NEW_DIR {d}/nope: no such folder")


@pytest.mark.parametrize("args, part", [
    (["diagnose", "x.png", "--out", "o", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["evaluate", "--data", "d", "--out", "o", "--shots", "two"], "--shots two: not a whole number"),
    (["evaluate", "--data", "d", "--out", "o", "--seeds", "0,a"], "--seeds 0,a: expected comma-separated"),
    (["evaluate", "--data", "d", "--out", "o", "--stage", "fine"], "--stage fine: not one of"),
    (["make-data", "--out", "o", "--size", "8"], "--size 8: must be at least 32"),
    (["train", "--epochs", "0"], "--epochs 0: must be at least 1"),
    (["diagnose", "x.png"], "the following arguments are required: --out"),
])
def test_bad_values_are_one_line(args, part, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith(f"samllava {args[0]}: ") and part in err


def test_checks_run_before_torch_is_imported(tmp_path):
    """A wrong path is answered by the light checks: the process never imports torch."""
    code = ("import sys; from samllava.cli import main; "
            f"rc = main(['diagnose', '{tmp_path}/nope.png', '--support', '{tmp_path}', '--out', '{tmp_path}/o']); "
            "print(rc, 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.split() == ["2", "False"] and run.stderr.count("\n") == 1, run.stderr


def test_every_command_has_its_checks():
    assert set(CHECKS) == set(COMMANDS)


def test_output_paths(tmp_path):
    assert output_folder("--out", str(tmp_path / "a" / "b")).is_dir()
    assert output_file("--out", str(tmp_path / "c" / "r.json")).parent.is_dir()
    with pytest.raises(UsageError, match="cannot create folder"):
        output_folder("--out", NOT_THERE)


def test_reproduce_passes_allow_dirty_to_the_runner(monkeypatch):
    import samllava.cli.reproduce as command
    from samllava.cli import main

    seen = []
    monkeypatch.setattr(command, "reproduce", lambda **kw: seen.append(kw["allow_dirty"]))
    assert main(["reproduce", "--only", "01", "--allow-dirty"]) == 0
    assert main(["reproduce", "--only", "01"]) == 0
    assert seen == [True, False]  # the runner's refusal names this flag; without it the default refuses
