"""The package's architecture, checked statically by tools/check_layers.py: a layer table, no upward
import and no cycle (imports inside functions counted), no module over 400 lines, no function over 60."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "tools" / "check_layers.py"


def _check(package: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), str(package)], cwd=package.parent, capture_output=True,
                          text=True, timeout=120)


def test_samllava_has_no_cycle_no_upward_import_and_no_oversized_code():
    run = _check(ROOT / "samllava")
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 import cycles, 0 upward imports, 0 modules in no layer" in run.stdout


def test_checker_finds_upward_imports_cycles_hidden_imports_and_unassigned_modules(tmp_path):
    pkg = tmp_path / "samllava"
    (pkg / "core").mkdir(parents=True)
    (pkg / "cli").mkdir()
    for init in (pkg, pkg / "core", pkg / "cli"):
        (init / "__init__.py").write_text("")
    (pkg / "core" / "config.py").write_text("from ..cli.main import main\n")  # base imports the top layer
    (pkg / "cli" / "main.py").write_text("def main():\n    from ..core import config\n")  # hidden: a cycle
    (pkg / "stray.py").write_text("x = 1\n")  # in no layer
    (pkg / "core" / "viz.py").write_text("def f():\n    import matplotlib\n")  # third-party, no reason given
    out = _check(pkg).stdout
    assert "upward import: samllava.core.config (base) imports samllava.cli.main (cli)" in out
    assert "import cycle of 2 modules: samllava.cli.main, samllava.core.config" in out
    assert "samllava.core.config inside a function" in out
    assert "module in no layer: samllava.stray" in out
    assert "import of matplotlib inside a function without a comment" in out
    assert "import loop between folders: cli <-> core" in out


def test_checker_counts_loose_modules(tmp_path):
    pkg = tmp_path / "samllava"
    pkg.mkdir()
    for i in range(9):
        (pkg / f"m{i}.py").write_text("")
    (pkg / "__init__.py").write_text("")
    out = _check(pkg).stdout
    assert "loose modules: 10 in" in out and "at most 8" in out
