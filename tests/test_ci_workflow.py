"""The GitHub Actions workflow for users' forks: valid (GitHub's workflow schema, vendored by
check-jsonschema; actionlint too where it is installed) and doing what the README says it does."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_workflow_passes_the_schema_linter():
    run = _lint(WORKFLOW)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_linter_catches_a_broken_workflow(tmp_path):
    broken = yaml.safe_load(WORKFLOW.read_text())
    job = next(iter(broken["jobs"].values()))
    del job["runs-on"]  # a job with no machine
    job["steps"].append({"name": "neither run nor uses"})
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    assert _lint(path).returncode != 0


@pytest.mark.skipif(
    shutil.which("actionlint") is None, reason="actionlint is not installed (its PyPI wrapper downloads the binary)"
)
def test_workflow_passes_actionlint():
    run = subprocess.run(["actionlint", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_workflow_runs_the_tests_the_smoke_reproduce_and_uploads_results():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(on)
    (job,) = wf["jobs"].values()
    runs = [s.get("run", "") for s in job["steps"]]
    assert "make test" in runs and "make test-slow" in runs  # both tiers gate, as in .ci/run
    smoke = next(s for s in job["steps"] if "reproduce" in s.get("run", ""))
    assert "--profile tiny --smoke" in smoke["run"]
    assert smoke["env"]["SAMLLAVA_RESULTS_DIR"].endswith("ci-artefacts/results")  # not over the committed results
    assert smoke["env"]["SAMLLAVA_EXECUTED_DIR"].endswith("ci-artefacts/executed")  # nor the committed notebooks
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "ci-artefacts/" in upload["with"]["path"] and upload["if"]
    assert runs.index("make test") < job["steps"].index(smoke) < job["steps"].index(upload)
    for step in job["steps"]:
        if "uses" in step:
            assert "@v" in step["uses"], f"{step['uses']}: pin the action's major version"
    assert "3.11" in str(job["steps"][1]["with"]["python-version"])  # the Python of offline-assets.md
