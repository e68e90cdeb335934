"""The README quotes no result by hand (issue #15): it links results/SUMMARY.md, which the reproduce run
writes from the tables, and stays a five-minute read; its layer map is tools/check_layers.py's."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_links_the_generated_summary_and_quotes_no_metric():
    for link in ("(results/SUMMARY.md)", "(docs/reproduction.md)", "(docs/flow.md)", "(docs/decisions.md)"):
        assert link in README, link
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    assert re.findall(r"\b\d{2,}\.\d+\b|\d\s?%", prose) == []  # a metric such as 96.4 or 78 %


def test_readme_is_short():
    assert len(README.split()) <= 1500


def test_readme_quotes_the_layer_map():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "check_layers.py"), "--readme"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() in README
