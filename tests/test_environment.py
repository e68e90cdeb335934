"""environment.yml (conda cannot run here), requirements.txt, pyproject.toml and the Makefile agree."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_environment_yml_matches_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip_section == _requirements()


def test_pyproject_matches_requirements():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps == _requirements()


def test_torch_and_torchvision_pinned_together():
    reqs = _requirements()
    assert any(re.fullmatch(r"torch==[\d.]+", r) for r in reqs)
    assert any(re.fullmatch(r"torchvision==[\d.]+", r) for r in reqs)
    # one install command takes the whole file: the Makefile installs requirements.txt in one pip call
    make = (ROOT / "Makefile").read_text()
    assert make.count("-r requirements.txt") == 1


def test_smollm2_pin_agrees():
    make = re.search(r"SMOLLM2 := (\S+)", (ROOT / "Makefile").read_text()).group(1)
    assert make in (ROOT / "environment.yml").read_text()


def test_ci_calls_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
