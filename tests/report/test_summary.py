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


def test_labels_say_whose_yes_no_which_gpu_and_which_subsets(tmp_path):
    """Table 5's accuracy is the verdict's where the profile answers from it; Table 11's GPU row is the paper's
    architectures with random weights on the GPU gpu_bench.json names, not the table's profile; Tables 2-4's mean
    rows average other subsets than the paper's."""
    import json

    run = provenance.provenance(profile="offline")
    t5 = pd.DataFrame({"K": [1], "method": ["SAM-LLaVA (this run)"], "accuracy": [86.8], "std": [1.0],
                       "paper MVTec-AD": [np.nan], "paper VisA": [np.nan]})
    results.write_table(t5, "table5_description_accuracy", run=run, directory=tmp_path)
    t11 = pd.DataFrame({"model": ["SAM-LLaVA, paper profile, random weights (NVIDIA H200, bfloat16)"], "batch": [1],
                        "latency_ms": [766.7], "throughput_img_s": [1.3]})
    results.write_table(t11, "table11_complexity", run=run, directory=tmp_path)
    (tmp_path / "gpu_bench.json").write_text(json.dumps({"gpu": {"device": "NVIDIA H200"}}))
    rows = {r["what"].split(" (Table")[0]: r for r in summary.summary_rows(tmp_path)}
    t5_row = next(r for r in rows.values() if r["table"].startswith("[table5"))
    assert "the calibrated verdict's yes/no (llm.answer_from_verdict)" in t5_row["what"]
    gpu = next(r for r in rows.values() if "random weights on a GPU" in r["what"])
    assert gpu["profile"] == "paper architectures, random weights, NVIDIA H200 (results/gpu_bench.json)"
    assert "latency_ms: 766.7" in gpu["this run"]
    fewshot = next(h for h in summary.HEADLINES if h.table == "table2_fewshot_1shot")
    assert "not the same subsets" in fewshot.what and "21 TADD subsets" in fewshot.what
    paper_run = provenance.provenance(profile="paper")
    results.write_table(t5, "table5_description_accuracy", run=paper_run, directory=tmp_path)
    t5_row = next(r for r in summary.summary_rows(tmp_path) if r["table"].startswith("[table5"))
    assert "verdict" not in t5_row["what"]  # the paper profile's language model answers by itself
    assert "[CLAIMS.md](CLAIMS.md)" in summary.write_summary(tmp_path, run=run).read_text()
