"""Seconds per kind of work: nested phases count once, in the innermost; the totals reach a file."""
import json
import time

import pytest

from samllava.core import timing


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(timing, "_totals", type(timing._totals)(float))


def test_nested_phases_count_each_second_once(tmp_path):
    @timing.phase("figures")
    def draw():
        time.sleep(0.05)

    with timing.phase("end-to-end training"):
        time.sleep(0.1)
        with timing.phase("encoding"):
            time.sleep(0.2)
        draw()
    t = timing.totals()
    assert set(t) == {"end-to-end training", "encoding", "figures"}
    assert 0.1 <= t["end-to-end training"] < 0.17 and 0.2 <= t["encoding"] < 0.27 and 0.05 <= t["figures"] < 0.12
    path = timing.write_totals(tmp_path / "phases.json")
    assert json.loads(path.read_text()) == t == timing.read_totals(path)
    assert timing.read_totals(tmp_path / "none.json") == {}


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="'training'"):
        timing.phase("training")
