"""The README quotes no result by hand (issue #15): it links results/SUMMARY.md, which the reproduce run
writes from the tables, and stays a five-minute read."""
import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_links_the_generated_summary_and_quotes_no_metric():
    assert "(results/SUMMARY.md)" in README and "(docs/provenance.md)" in README
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    assert re.findall(r"\b\d{2,}\.\d+\b|\d\s?%", prose) == []  # a metric such as 96.4 or 78 %


def test_readme_is_short():
    assert len(README.split()) <= 1500
