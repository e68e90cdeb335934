"""Paper columns hold only the paper's numbers: every cell under a "paper" header, and every cell of a row
marked "(paper", is empty or a number of samllava.report.paper_values."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samllava.report import paper_values
from samllava.core import results
from samllava.notebook.tables import ablations, detection

RESULTS = Path(__file__).resolve().parents[2] / "results"
REPORTED = paper_values.reported_numbers()


def paper_cells(df: pd.DataFrame):
    """``(row label, column, value)`` of every numeric cell that claims to be the paper's."""
    label = df.columns[0]
    for _, row in df.iterrows():
        paper_row = "(paper" in str(row[label])
        for col in df.columns[1:]:
            value = row[col]
            if (paper_row or results.is_paper_column(col)) and isinstance(value, (int, float, np.number)):
                if not pd.isna(value):
                    yield row[label], col, float(value)


def foreign(df: pd.DataFrame) -> list:
    return [(r, c, v) for r, c, v in paper_cells(df) if round(v, 2) not in REPORTED]


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.csv")), ids=lambda p: p.stem)
def test_committed_tables_hold_only_paper_numbers_under_paper_headers(path):
    assert foreign(results.read_table(path)) == []


def test_fewshot_mean_rows_keep_paper_and_run_apart():
    df = pd.DataFrame({"subset": ["Aitex", "CFD"], "SAM-LLaVA (this run)": [90.0, 80.0],
                       "SAM-LLaVA (paper)": [95.6, 95.4], "PatchCore (paper)": [63.6, 87.5]})
    out = detection.with_mean_rows(df, 1).set_index("subset")
    ours = out.loc[paper_values.MEAN_ROW]
    assert ours["SAM-LLaVA (this run)"] == 85.0
    assert ours[["SAM-LLaVA (paper)", "PatchCore (paper)"]].isna().all()  # no computed number under a paper header
    theirs = out.loc[paper_values.PAPER_MEAN_ROW]
    assert theirs["SAM-LLaVA (paper)"] == paper_values.FIGURE2_MEAN["SAM-LLaVA"][0] == 93.3
    assert pd.isna(theirs["SAM-LLaVA (this run)"]) and pd.isna(theirs["PatchCore (paper)"])  # the paper states none
    assert foreign(out.reset_index()) == []
    assert [detection.with_mean_rows(df, k).iloc[-1]["SAM-LLaVA (paper)"] for k in (1, 2, 4)] == [93.3, 94.0, 95.0]


def test_a_computed_number_under_a_paper_header_is_caught():
    df = pd.DataFrame({"subset": ["mean", "x (paper)"], "SAM-LLaVA (paper)": [93.41, np.nan], "ours": [1.0, 2.5]})
    assert foreign(df) == [("mean", "SAM-LLaVA (paper)", 93.41), ("x (paper)", "ours", 2.5)]


def test_ablation_rows_outside_the_paper_have_empty_paper_cells():
    assert all(np.isnan(v) for v in ablations._paper(ablations.FULL_SAM_ONLY).values())
    assert list(ablations._paper("w/o SASA").values()) == list(paper_values.ABLATIONS["w/o SASA"])
    assert set(ablations.DEFINITIONS) == set(ablations.ABLATIONS) | {ablations.FULL_SAM_ONLY}
    note = ablations.ablation_note([0], 10, 1e-3, 1, ["w/o SASA"], 6)
    assert all(f"[{name}]" in note for name in ablations.DEFINITIONS)
    assert "facts sentence" in note and "cell words" in note and "SAM's own output" in note
