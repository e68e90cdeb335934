"""results/SUMMARY.md is written from the tables: this run's headline numbers, the paper's, profile and data."""
import numpy as np
import pandas as pd

from samllava.notebook import tables as pipeline
from samllava.core import provenance, results
from samllava.report import summary
from samllava.notebook.tables import detection


def test_summary_reads_numbers_and_labels_from_the_tables(tmp_path):
    run = provenance.provenance(profile="tiny", data="synthetic stand-in")
    df = pd.DataFrame({"subset": ["Aitex"], "SAM-LLaVA (this run)": [90.04], "SAM-LLaVA (paper)": [95.6]})
    pooled = pipeline.pool_training_seeds([detection.with_mean_rows(df.assign(**{"SAM-LLaVA (this run)": v}), 2)
                                           for v in (89.04, 91.04)])  # two training seeds: 90.04 ± 1.41
    results.write_table(pooled, "table3_fewshot_2shot", run=run, dataset="TADD stand-in (synthetic)",
                        directory=tmp_path)
    # a row without a batch (counted from the configuration) makes the batch column float: 1.0 must match "1"
    t11 = pd.DataFrame({"model": ["SAM-LLaVA, tiny profile (this run)",
                                  "SAM-LLaVA, paper profile (counted from its configuration)",
                                  "SAM-LLaVA (paper, L40)"],
                        "batch": [1, None, 1], "latency_ms": [12.345, None, 1563.86],
                        "throughput_img_s": [81.0, None, 0.64]})
    results.write_table(t11, "table11_complexity", run=run, directory=tmp_path)
    text = summary.write_summary(tmp_path, run=run).read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| [table3_fewshot_2shot]"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:6] == ["90.0 ± 1.41", "94.0", "tiny", "TADD stand-in (synthetic)"]  # the paper's 21-subset mean
    line = next(ln for ln in text.splitlines() if "batch 1, this profile" in ln)
    assert "latency_ms: 12.3; throughput_img_s: 81.0" in line and "latency_ms: 1563.9; throughput_img_s: 0.64" in line
    assert "| [table1_zero_shot](table1_zero_shot.md) |" in text and "not produced" in text
    assert results.read_header(tmp_path / "SUMMARY.md")["commit"]


def test_headlines_point_at_existing_columns_of_the_pipeline_tables():
    df = detection.with_mean_rows(pd.DataFrame({"subset": ["a"], "SAM-LLaVA (this run)": [1.0],
                                                "SAM-LLaVA (paper)": [np.nan]}), 1)
    h = next(h for h in summary.HEADLINES if h.table == "table2_fewshot_1shot")
    assert summary._numbers(df, h.ours, h.columns) == "1.00"
    assert summary._numbers(df, h.paper, h.paper_columns) == "93.3"
