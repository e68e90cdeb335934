"""``benchmarks/paper_size_cpu.py --tiny``: the paper-size CPU benchmark's whole road at tiny widths, so the script
that measures the real sizes (one diagnosis, 128 new tokens) cannot rot."""
import json

import paper_size_cpu  # benchmarks/paper_size_cpu.py


def test_tiny_mode_writes_loads_diagnoses_and_reports(isolated, tmp_path, monkeypatch):
    for variable in paper_size_cpu.ENV.values():
        monkeypatch.setenv(variable, "")  # the script points them at its files; restored afterwards
    argv = ["--tiny", "--dir", str(tmp_path / "files"), "--out", str(tmp_path / "out"), "--new-tokens", "16",
            "--shots", "2", "--quiet"]
    assert paper_size_cpu.main(argv) == 0
    report = json.loads((tmp_path / "out" / "paper_size_cpu.json").read_text())
    assert report["label"] == "random weights, CPU" and report["provenance"]["note"] == "random weights, CPU"
    assert report["resolved"] == {part: f["path"] for part, f in report["files"].items()}
    assert all(f["bytes"] > 0 for f in report["files"].values())
    assert set(report["stages_s"]) == {"clip_text_per_category", "coarse_zero_and_few_shot", "sam_image_encoder",
                                       "sam_prompt_and_decoder", "sasa", "llava_generate"}
    lm = report["language_model"]
    assert 1 <= lm["new_tokens"] <= 16 and lm["passes"] >= 1 and lm["prefill_s"] > 0
    assert report["peak_rss_GB"]["after_diagnosis"] >= report["peak_rss_GB"]["after_loading"] > 0
    # a second run finds its files and reuses them
    assert paper_size_cpu.main(argv) == 0
    assert json.loads((tmp_path / "out" / "paper_size_cpu.json").read_text())["write"] == {"reused": True}
