"""docs/gpu.md quotes results/gpu_bench.json by hand: its "this run" and "runs" columns must say
what the JSON records (targets and the paper's values have columns of their own)."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "gpu.md").read_text()
GPU = json.loads((ROOT / "results" / "gpu_bench.json").read_text())["gpu"]
FAST = GPU["end_to_end_fast"]

# row label (start of the first cell) -> the JSON entry of "this run"'s first number and its unit scale
ROWS = {
    "CLIP text, once per category": GPU["stages_ms"]["clip_text_per_category"],
    "coarse stage": GPU["stages_ms"]["coarse_zero_and_few_shot"],
    "SAM ViT-H image encoder, batch 1, bf16": GPU["stages_ms"]["sam_image_encoder"],
    "SAM ViT-H image encoder, batch 1, fp32": GPU["stages_ms"]["sam_image_encoder_float32"],
    "SAM prompt encoder": GPU["stages_ms"]["sam_prompt_and_decoder"],
    "SASA": GPU["stages_ms"]["sasa"],
    "LLaVA prefill": GPU["stages_ms"]["llava_prefill_and_1_token"],
    "128 tokens with": GPU["stages_ms"]["llava_generate_128_tokens"],
    "**whole diagnosis, batch 1": FAST["batch_1"],
    "whole diagnosis, batch 8": FAST["batch_8"],
    "whole diagnosis, batch 32": FAST["batch_32"],
    "one training step": GPU["train"]["step_batch_4"],
}


def _row(label: str) -> list[str]:
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(label):
            return cells
    raise AssertionError(f"no row starting {label!r} in docs/gpu.md")


def _first_number(text: str) -> tuple[float, int]:
    m = re.search(r"[\d,]+(?:\.(\d+))?", text.replace("*", ""))
    return float(m.group(0).replace(",", "")), len(m.group(1) or "")


@pytest.mark.parametrize("label", ROWS)
def test_this_run_and_runs_columns_match_the_json(label):
    entry = ROWS[label]
    cells = _row(label)
    value, decimals = _first_number(cells[1])
    assert value == pytest.approx(round(entry["mean_ms"], decimals), abs=10 ** -decimals), cells[1]
    assert cells[2] == f"{entry['runs']} after {entry['warmup']}"


def test_peak_memory_and_throughput_rows():
    assert _first_number(_row("peak memory, batch 1")[1])[0] == round(FAST["batch_1"]["peak_memory_GB"], 1)
    assert f"{FAST['batch_1']['images_per_s']:.2f} images/s" in _row("**whole diagnosis, batch 1")[1]
    assert f"{FAST['batch_32']['images_per_s']:.1f} images/s" in _row("whole diagnosis, batch 32")[1]
