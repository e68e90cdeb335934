"""What is committed under results/ says where it came from (issue #15): every JSON report carries a
provenance record; every table written since provenance records exist carries its header."""
import json
from pathlib import Path

import pytest

from samllava.core.results import read_header

RESULTS = Path(__file__).resolve().parent.parent / "results"
RECORD = ("date", "git", "profile", "weights", "data", "seeds", "device", "versions")
HEADER = ("date", "commit", "profile", "weights", "data", "seeds", "device", "versions")


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_json_reports_carry_provenance(path):
    record = json.loads(path.read_text())["provenance"]
    assert set(RECORD) <= set(record)
    assert record["git"]["commit"]


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.md")) + sorted(RESULTS.glob("*.csv")), ids=lambda p: p.name)
def test_tables_carry_their_header(path):
    head = read_header(path)
    if "commit" not in head and "date" not in head:
        pytest.skip("written before provenance records: `make reproduce` rewrites it with its header")
    assert set(HEADER) <= set(head)
