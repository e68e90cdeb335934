"""results/CLAIMS.md (issue #34): each claim of the paper against this run, with a paired interval and a verdict,
on hand-made tables."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samllava.core import provenance, results
from samllava.report import claims, paper_values
from samllava.report import runs as R
from samllava.report.runs import RunLog, paired_values

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = [f"c{i}" for i in range(6)]


def _ablation_runs(shift: dict[str, float], noise: float = 0.0, accuracy: bool = True,
                   zigzag: dict[str, float] | None = None) -> pd.DataFrame:
    """Full model at 90 (both scorings), each variant at 90 + shift (+- ``zigzag`` alternating over the pairs:
    a mean difference of exactly 0 with a spread), per training seed x support seed x category."""
    rng = np.random.default_rng(1)
    zigzag = zigzag or {}
    log = RunLog()
    arms = [("SAM-LLaVA (full)", "combined"), ("SAM-LLaVA (full)", "sam"), ("w/o SASA", "combined"),
            *((v, "sam") for v in shift)]
    for t in (0, 1, 2):
        for s in (0, 1, 2):
            for c in CATEGORIES:
                for arm, scored in arms:
                    for metric in ("image_auroc", "pixel_auroc"):
                        wiggle = zigzag.get(arm, 0.0) * (-1) ** CATEGORIES.index(c)
                        log.add(arm, metric, 90 + shift.get(arm, 0.0) + wiggle + noise * rng.standard_normal(),
                                training_seed=t, support_seed=s, unit=c, scored_on=scored)
    for c in CATEGORIES if accuracy else ():
        log.add("SAM-LLaVA (full)", "accuracy", 87.5, training_seed=0, support_seed=0, unit=c, scored_on="answer")
    return log.frame()


def _write(df, name, directory, profile="offline"):
    results.write_table(df, name, run=provenance.provenance(profile=profile), directory=directory)


def _outcome(directory, key):
    return next(o for o in claims.outcomes(directory) if o.claim.key == key)


def test_bootstrap_is_paired_percentile_and_deterministic():
    assert claims.bootstrap(np.full(10, -1.5)) == (-1.5, -1.5, -1.5)  # every pair alike: no spread
    d = np.random.default_rng(0).normal(2.0, 1.0, 200)
    mean, low, high = claims.bootstrap(d)
    assert low < mean < high and mean == pytest.approx(d.mean())
    assert high - low == pytest.approx(2 * 1.96 * d.std() / np.sqrt(d.size), rel=0.15)  # about the normal interval
    assert claims.bootstrap(d) == (mean, low, high)  # seeded: the page is the same for the same tables
    assert all(np.isnan(claims.bootstrap(np.array([]))))


def test_pairs_share_every_key_and_a_seed_one_side_lacks_is_broadcast():
    log = RunLog()
    for c, v in (("a", 10.0), ("b", 20.0)):
        log.add("coarse only", "iou", v, unit=c)  # does not train: no training seed
        for t in (0, 1):
            log.add("coarse + SAM", "iou", v + 1 + t, training_seed=t, unit=c)
    df = log.frame()
    assert list(df.columns) == ["arm", "metric", "training_seed", "support_seed", "unit", "value"]
    assert str(df["training_seed"].dtype) == "Int64"
    d = paired_values(df, {"arm": "coarse + SAM"}, {"arm": "coarse only"})
    assert sorted(d) == [1.0, 1.0, 2.0, 2.0]  # each category's coarse value meets both training seeds
    # labels are keys too: K = 4 against K = 1 pairs the same seed and subset
    k = RunLog()
    for K, base in ((1, 90.0), (4, 92.0)):
        for s in (0, 1):
            k.add("SAM-LLaVA", "pixel_auroc", base + s, training_seed=0, support_seed=s, unit="x", K=K)
    assert list(paired_values(k.frame(), {"K": 4}, {"K": 1})) == [2.0, 2.0]
    assert paired_values(k.frame(), {"K": 8}, {"K": 1}).size == 0


def test_runs_survive_the_csv_round_trip(tmp_path):
    df = _ablation_runs({"w/o MS-Prompt": -2.0})
    _write(df, "tables7_10_ablations_runs", tmp_path)
    back = results.read_table(tmp_path / "tables7_10_ablations_runs.csv")
    d = paired_values(back, {"arm": "w/o MS-Prompt", "metric": "pixel_auroc"},
                      {"arm": "SAM-LLaVA (full)", "metric": "pixel_auroc"})
    assert d.size == 3 * 3 * len(CATEGORIES) and np.allclose(d, -2.0)  # paired with the full model scored alike


def test_ablation_verdicts(tmp_path):
    shift = {"w/o MS-Prompt": -2.0, "single-scale SAM": +1.5, "box prompt": 0.0}
    _write(_ablation_runs(shift, noise=0.3, zigzag={"box prompt": 3.0}), "tables7_10_ablations_runs", tmp_path)
    lower = _outcome(tmp_path, "w/o MS-Prompt: lower pixel AUROC")
    assert lower.verdict == "supported" and lower.high < 0 and lower.n == 54
    assert re.match(r"-2\.\d\d points \[-2\.\d\d, -1\.\d\d\], 54 pairs", lower.ours)
    assert _outcome(tmp_path, "single-scale SAM: lower pixel AUROC").verdict == "contradicted"
    assert _outcome(tmp_path, "box prompt: lower pixel AUROC").verdict == "inconclusive at this sample size"
    sasa = _outcome(tmp_path, "w/o SASA: lower pixel AUROC")
    assert sasa.verdict == "not testable in this profile" and "by construction" in sasa.why
    # offline: the yes/no is the verdict's, so no variant's accuracy is measured, and the reason says so
    acc = _outcome(tmp_path, "w/o MS-Prompt: lower accuracy")
    assert acc.verdict == "not testable in this profile" and "answer_from_verdict" in acc.why
    assert _outcome(tmp_path, "point prompt: lower pixel AUROC").verdict == "not measured in this run"  # no values


def test_the_paper_profile_tests_what_the_offline_one_cannot(tmp_path):
    _write(_ablation_runs({"w/o MS-Prompt": -2.0}), "tables7_10_ablations_runs", tmp_path, profile="paper")
    acc = _outcome(tmp_path, "w/o MS-Prompt: lower accuracy")
    assert acc.verdict == "not measured in this run"  # not blocked by the profile; only the full model was measured
    zero = RunLog()
    for c in CATEGORIES:
        zero.add(R.ZERO_SHOT, "pixel_auroc", 70.0, unit=c, direction="a -> b")
        for t in (0, 1, 2):
            zero.add(R.OURS, "pixel_auroc", 80.0 + t, training_seed=t, unit=c, direction="a -> b")
    for profile, verdict in (("paper", "supported"), ("offline", "not testable in this profile")):
        _write(zero.frame(), "table1_zero_shot_runs", tmp_path, profile=profile)
        o = _outcome(tmp_path, "zero-shot pixel AUROC above WinCLIP")
        assert o.verdict == verdict and o.effect == pytest.approx(11.0)
    assert "random weights" in o.why  # offline: CLIP is random


def test_an_exact_zero_effect_contradicts_and_too_few_pairs_decide_nothing():
    assert claims._verdict(-1, 0.0, 0.0, 30)[0] == "contradicted"
    assert claims._verdict(+1, 0.5, 1.0, 2)[0] == "inconclusive at this sample size"
    assert claims._verdict(+1, 0.5, 1.0, 30)[0] == "supported"
    assert claims._verdict(+1, -0.5, 1.0, 30)[0] == "inconclusive at this sample size"


def test_counts_are_exact_and_timings_on_another_gpu_are_not_tested(tmp_path):
    t11 = pd.DataFrame({"model": ["SAM-LLaVA, paper profile (counted from its configuration)",
                                  "SAM-LLaVA, paper profile, random weights (H200; gpu_bench.json)"],
                        "total_M": [8334.92, 8334.92], "trainable_M": [41.83, 41.83], "lora_M": [31.59, 31.59],
                        "latency_ms": [np.nan, 766.7], "throughput_img_s": [np.nan, 1.3],
                        "peak_memory_GB": [np.nan, 17.6]})
    _write(t11, "table11_complexity", tmp_path)
    assert _outcome(tmp_path, "8,334.92 M parameters").verdict == "supported"
    trainable = _outcome(tmp_path, "112.38 M trainable (1.35 %)")
    assert trainable.verdict == "contradicted" and "(0.50 % of 8,334.92 M)" in trainable.ours
    assert _outcome(tmp_path, "31.59 M LoRA (0.38 %)").verdict == "supported"
    assert _outcome(tmp_path, "fewest trainable parameters").verdict == "supported"  # 41.83 < 150.44
    latency = _outcome(tmp_path, "1,563.86 ms at batch 1")
    assert latency.verdict == "not testable in this profile" and "766.70 ms" in latency.ours and "L40" in latency.why


def test_write_claims_lists_every_claim_with_paper_cells_and_a_verdict(tmp_path):
    _write(_ablation_runs({"w/o MS-Prompt": -2.0}), "tables7_10_ablations_runs", tmp_path)
    path = claims.write_claims(tmp_path, run=provenance.provenance(profile="offline"))
    text = path.read_text()
    assert results.read_header(path)["commit"]  # the provenance header, as every table
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| claim")]
    assert len(rows) == len(claims.CLAIMS) > 40
    for row in rows:
        verdict = row.split(" | ")[3]
        assert verdict in claims.VERDICTS, row
    assert "MVTec-AD -2.6 (96.1 → 93.5), VisA -1.2 (96.5 → 95.3)" in text  # Table 8's cells
    assert "the text says -1.4 on MVTec-AD; Table 8 gives -2.6" in text  # where the paper's text and table differ
    tally = text.split("# The paper's claims, tested by this run")[1].strip().splitlines()[0]
    assert tally.endswith(f"(of {len(claims.CLAIMS)} claims).") and "supported" in tally
    assert list(claims.claims_frame(tmp_path, notebook="10")["notebook"].unique()) == ["10"]


def test_every_claim_reads_a_table_its_notebook_writes():
    """A claim names its notebook; that notebook's source writes the table (or runs table) the claim reads."""
    for c in claims.CLAIMS:
        if c.measure is None:
            assert c.blocked(claims.Facts()), c.key  # nothing measured: it must say why
            continue
        name = c.measure.table + ("_runs" if isinstance(c.measure, (claims.Paired, claims.Level)) else "")
        (src,) = (ROOT / "notebooks" / "src").glob(f"{c.notebook}_*.py")
        text = src.read_text()
        assert f'"{name}"' in text, (c.key, name, src.name)
        assert f'claims_frame(notebook="{c.notebook}")' in text, src.name


def test_every_ablation_of_tables_7_to_10_is_a_claim_per_metric():
    keys = {c.key for c in claims.CLAIMS}
    for variant in paper_values.ABLATIONS:
        if variant != "SAM-LLaVA (full)":
            assert {f"{variant}: lower {m}" for m in ("image AUROC", "pixel AUROC", "accuracy")} <= keys, variant
    assert len(keys) == len(claims.CLAIMS)  # one row per claim
