"""The paper's numbered claims, as data: what each says, the cells it comes from, how this run measures it.

Each :class:`Claim` names the paper's effect (with the cells of its tables), the sign it claims, the table whose
per-run values measure it here (:mod:`samllava.report.runs`) and, where a profile cannot test it, the reason
(:class:`Facts`: random CLIP, the verdict's yes/no, a baseline not implemented). :mod:`samllava.report.claims`
measures them and writes ``results/CLAIMS.md``. The paper's numbers come from :mod:`samllava.report.paper_values`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from samllava.core.config import load_profile
from samllava.report import paper_values as pv
from samllava.report import runs as R


@dataclass(frozen=True)
class Facts:
    """What the run's profile can test, from the ``profile`` line of a table's header."""

    profile: str = "unknown"
    clip_random: bool = False  # CLIP without pretrained weights: the zero-shot map and its prompt carry no signal
    answer_from_verdict: bool = False  # the answer's yes/no is the calibrated verdict's (llm.answer_from_verdict)

    @classmethod
    def of(cls, header: dict[str, str]) -> "Facts":
        name = header.get("profile", "unknown")
        try:
            p = load_profile(name)
        except (FileNotFoundError, ValueError, KeyError):
            return cls(name, "clip: random" in header.get("weights", ""), False)
        return cls(name, p.clip.weights is None, bool(p.llm.answer_from_verdict))


@dataclass(frozen=True)
class Paired:
    """The mean difference ``a - b`` of a runs table's values, paired over everything but the selected columns."""

    table: str  # the pooled table; its values are in <table>_runs.csv
    a: dict
    b: dict
    over: str  # what a pair is, for the reader ("training seed x support seed x category")
    unit: str = "points"


@dataclass(frozen=True)
class Level:
    """The mean of one selection of a runs table's values (bootstrap over them)."""

    table: str
    where: dict
    over: str
    unit: str = "points"


@dataclass(frozen=True)
class Count:
    """A cell of a table (Table 11's counted paper profile) against the paper's number; ``below``: the claim is
    that the count lies under this value (fewer trainable parameters than every baseline)."""

    table: str
    row: str  # fnmatch pattern of the first column
    column: str
    paper: float
    of: str | None = None  # a column the count is a share of (percent)
    below: float | None = None


@dataclass(frozen=True)
class Shown:
    """A cell shown beside a claim this run cannot test (a timing on another GPU)."""

    table: str
    row: str
    column: str
    unit: str = ""


@dataclass(frozen=True)
class Claim:
    """One claim: ``text`` in the paper's words, ``paper`` its effect and cells, ``direction`` the sign it claims
    for a difference (+1 / -1; 0 for a count or level), ``blocked(facts)`` a reason the profile cannot test it."""

    key: str
    source: str
    text: str
    paper: str
    notebook: str
    measure: Paired | Level | Count | Shown | None
    direction: int = 0
    blocked: Callable[[Facts], str | None] = field(default=lambda f: None)
    note: str = ""


# --- reasons a profile cannot test a claim ------------------------------------------------------------------

def _never(reason: str) -> Callable[[Facts], str]:
    return lambda f: reason


def _random_clip(f: Facts) -> str | None:
    return ("CLIP has random weights in this profile: the zero-shot map carries no learned notion of a defect, "
            "so a comparison with it says nothing about the method") if f.clip_random else None


def _verdict_answers(f: Facts) -> str | None:
    return ("the yes/no is the calibrated verdict's in this profile (llm.answer_from_verdict), not the language "
            "model's, and no variant or training changes that verdict") if f.answer_from_verdict else None


NOT_RUN = "{0} not run in this repository (the paper copies the baselines' numbers from [12]): any profile"
SASA_SHARES_SAM = ("w/o SASA keeps the full model's SAM side (notebook 10): its detection numbers equal the full "
                   "model's by construction, in every profile")


# --- the claims ------------------------------------------------------------------------------------------------

def _delta(a: float, b: float) -> str:
    return f"{b - a:+.1f} ({a:.1f} → {b:.1f})"


def _fewshot_gap(other: str) -> str:
    """The paper's mean over the stand-in subsets of SAM-LLaVA minus ``other`` per K (Tables 2-4)."""
    gaps = [np.mean([m["SAM-LLaVA"][i] - m[other][i] for m in pv.TABLES2_4.values()]) for i in range(3)]
    return ", ".join(f"K = {k}: {g:+.1f}" for k, g in zip(pv.SHOTS, gaps)) + \
        f" (Tables 2-4, SAM-LLaVA - {other}, mean over the {len(pv.TABLES2_4)} subsets with a stand-in here)"


def _table1() -> list[Claim]:
    t1 = pv.TABLE1
    over = "direction x training seed x category"

    def ours_minus_map(metric: str) -> Paired:
        return Paired("table1_zero_shot", {"arm": R.OURS, "metric": metric}, {"arm": R.ZERO_SHOT, "metric": metric},
                      over)

    return [
        Claim("zero-shot pixel AUROC above WinCLIP", "Table 1", "zero-shot, SAM-LLaVA localises defects better than "
              "the WinCLIP zero-shot map",
              f"pixel AUROC {_delta(t1['WinCLIP'][1], t1['SAM-LLaVA'][1])} VisA → MVTec-AD, "
              f"{_delta(t1['WinCLIP'][3], t1['SAM-LLaVA'][3])} MVTec-AD → VisA", "06",
              ours_minus_map("pixel_auroc"), +1, _random_clip),
        Claim("zero-shot image AUROC above WinCLIP", "Table 1", "zero-shot, SAM-LLaVA detects defective images better "
              "than WinCLIP",
              f"image AUROC {_delta(t1['WinCLIP'][0], t1['SAM-LLaVA'][0])} VisA → MVTec-AD, "
              f"{_delta(t1['WinCLIP'][2], t1['SAM-LLaVA'][2])} MVTec-AD → VisA", "06",
              ours_minus_map("image_auroc"), +1,
              _never("the image score is the coarse stage's in both rows here (SAM changes the pixel map only): "
                     "equal by construction, in every profile")),
        Claim("zero-shot: best of 13 baselines", "Table 1, Sec. 5.1.1", "SAM-LLaVA beats all 13 baselines zero-shot, "
              "SPGDD-GPT by 1.2 image / 0.8 pixel AUROC on VisA → MVTec-AD",
              f"image / pixel AUROC {_delta(t1['SPGDD-GPT'][0], t1['SAM-LLaVA'][0])} / "
              f"{_delta(t1['SPGDD-GPT'][1], t1['SAM-LLaVA'][1])} over SPGDD-GPT", "06", None, +1,
              _never(NOT_RUN.format("the 13 baselines (but a WinCLIP-style zero-shot map) are")))]


def _fewshot() -> list[Claim]:
    over = "K x training seed x support seed x subset"
    mean, full = pv.FIGURE2_MEAN, pv.ABLATIONS["SAM-LLaVA (full)"]
    return [
        Claim("K = 1 → 4 raises pixel AUROC", "Fig. 2, Sec. 5.1.2", "more normal shots improve defect localisation",
              f"{_delta(mean['SAM-LLaVA'][0], mean['SAM-LLaVA'][2])} (Fig. 2, mean of 21 TADD subsets); "
              f"{_delta(*pv.SHOTS_PIXEL_MVTEC)} on MVTec-AD (Sec. 5.1.2 text)", "07",
              Paired("tables2_4_fewshot", {"arm": R.OURS, "K": 4, "metric": "pixel_auroc"},
                     {"arm": R.OURS, "K": 1, "metric": "pixel_auroc"}, "training seed x support seed x subset"), +1),
        Claim("few-shot above zero-shot", "Tables 1, 7; Sec. 5.1.2", "normal shots improve on the zero-shot map",
              f"MVTec-AD pixel AUROC {_delta(pv.TABLE1['SAM-LLaVA'][1], full[1])} (Table 1 zero-shot → Table 7 "
              f"1-shot), image {_delta(pv.TABLE1['SAM-LLaVA'][0], full[0])}",
              "07", Paired("tables2_4_fewshot", {"arm": R.OURS, "metric": "pixel_auroc"},
                           {"arm": R.ZERO_SHOT, "metric": "pixel_auroc"}, over), +1, _random_clip,
              "ours: few-shot SAM-LLaVA against its own zero-shot coarse map, on the TADD stand-in"),
        Claim("few-shot above PatchCore", "Tables 2-4", "SAM-LLaVA's few-shot pixel AUROC is above PatchCore's",
              _fewshot_gap("PatchCore"), "07",
              Paired("tables2_4_fewshot", {"arm": R.OURS, "metric": "pixel_auroc"},
                     {"arm": R.KNN, "metric": "pixel_auroc"}, over), +1,
              note="ours: a PatchCore-style k-NN on the same backbone"),
        Claim("few-shot above WinCLIP", "Tables 2-4", "SAM-LLaVA's few-shot pixel AUROC is above WinCLIP's",
              _fewshot_gap("WinCLIP"), "07", None, +1,
              _never("WinCLIP few-shot is not run here (only the zero-shot map, row 'few-shot above zero-shot')")),
        Claim("few-shot above SPGDD-GPT", "Fig. 2", "SAM-LLaVA outperforms SPGDD-GPT by 2.0, 1.4, 1.3 at K = 1, 2, 4",
              ", ".join(f"K = {k}: {_delta(s, o)}" for k, s, o in zip(pv.SHOTS, mean["SPGDD-GPT"], mean["SAM-LLaVA"])),
              "07", None, +1, _never(NOT_RUN.format("SPGDD-GPT is")))]


def _description() -> list[Claim]:
    t5, t6 = pv.TABLE5, pv.TABLE6
    return [
        Claim("K = 1 → 4 lowers yes/no accuracy", "Table 5, Sec. 5.1.2", "the yes/no accuracy falls slightly from 1 to "
              "4 shots (the model becomes more conservative)",
              f"MVTec-AD {_delta(t5[1]['SAM-LLaVA'][0][0], t5[4]['SAM-LLaVA'][0][0])}, VisA "
              f"{_delta(t5[1]['SAM-LLaVA'][1][0], t5[4]['SAM-LLaVA'][1][0])}", "08",
              Paired("table5_description_accuracy", {"arm": R.OURS, "K": 4, "metric": "correct"},
                     {"arm": R.OURS, "K": 1, "metric": "correct"}, "training seed x support seed x image"), -1,
              _verdict_answers),
        Claim("yes/no above SPGDD-GPT", "Table 5", "SAM-LLaVA's yes/no accuracy beats SPGDD-GPT's by 2.2 / 3.2 at "
              "1-shot",
              f"MVTec-AD {_delta(t5[1]['SPGDD-GPT'][0][0], t5[1]['SAM-LLaVA'][0][0])}, VisA "
              f"{_delta(t5[1]['SPGDD-GPT'][1][0], t5[1]['SAM-LLaVA'][1][0])}", "08", None, +1,
              _never(NOT_RUN.format("SPGDD-GPT is"))),
        Claim("training improves the yes/no answer", "Sec. 3.5, Table 5", "end-to-end training (Eq. 9-10) gives "
              "accurate yes/no answers",
              f"no untrained number; the trained model: {t5[1]['SAM-LLaVA'][0][0]:g} / {t5[1]['SAM-LLaVA'][1][0]:g} "
              "(MVTec-AD / VisA, 1-shot)", "05",
              Paired("training_before_after", {"arm": R.AFTER, "metric": "correct"},
                     {"arm": R.BEFORE, "metric": "correct"}, "training seed x image"), +1, _verdict_answers),
        Claim("training teaches the position", "Sec. 3.3-3.5, Fig. 3", "the trained description names where the "
              "defect is (grounded in the mask)", "no number (Fig. 3: 'precise central location')", "05",
              Paired("training_before_after", {"arm": R.AFTER, "metric": "position_correct"},
                     {"arm": R.BEFORE, "metric": "position_correct"}, "training seed x defective image"), +1),
        Claim("judge score 96.0, above every baseline", "Table 6, Sec. 5.2", "GPT-4V scores SAM-LLaVA's descriptions "
              "96.0 of 100, above all four baselines",
              f"all: SPGDD-GPT → SAM-LLaVA {_delta(t6['SPGDD-GPT'][2], t6['SAM-LLaVA'][2])}",
              "08", Level("table6_judge", {"arm": R.OURS, "metric": "score"}, "training seed x image", "of 100"), 0,
              _never("no baseline's descriptions are judged here, and the judge is the offline grounded score unless "
                     "an endpoint is configured (the paper's is GPT-4V on TADD)"))]


def _segmentation() -> list[Claim]:
    return [
        Claim("SAM refines the coarse mask (IoU)", "Sec. 3.2, Fig. 5", "SAM turns the coarse mask into a pixel-precise "
              "mask", "no number (Fig. 5, qualitative)", "03",
              Paired("segmentation_coarse_vs_fine", {"arm": R.CASCADE, "metric": "mask_iou"},
                     {"arm": R.COARSE, "metric": "mask_iou"}, "training seed x defective image"), +1),
        Claim("SAM refines the coarse map (pixel AUROC)", "Sec. 3.2, Sec. 5.1.1", "the gain stems from SAM's "
              "pixel-precise segmentation", "no number for coarse vs fine", "03",
              Paired("segmentation_coarse_vs_fine", {"arm": R.CASCADE, "metric": "pixel_auroc"},
                     {"arm": R.COARSE, "metric": "pixel_auroc"}, "training seed x support seed x category"), +1)]


ABLATION_WORDS = {"w/o CLIP-SAM cascade": "SAM without the coarse prompt from CLIP",
                  "w/o MS-Prompt": "removing the multi-scale prompt learner",
                  "w/o MS-Decoder": "removing the multi-scale mask decoder",
                  "single-scale SAM": "removing both multi-scale parts",
                  "w/o SASA": "replacing SASA by a concatenation",
                  "box prompt": "a box prompt instead of the mask prompt",
                  "point prompt": "point prompts instead of the mask prompt"}
ABLATION_SOURCES = {"w/o CLIP-SAM cascade": "Table 7, Sec. 5.3.1", "w/o MS-Prompt": "Table 8, Sec. 5.3.2",
                    "w/o MS-Decoder": "Table 8, Sec. 5.3.2", "single-scale SAM": "Table 8, Sec. 5.3.2",
                    "w/o SASA": "Table 9, Sec. 5.3.3", "box prompt": "Table 10, Sec. 5.3.4",
                    "point prompt": "Table 10, Sec. 5.3.4"}
# Where the paper's text states another number than its table, or a qualifier the table decides.
ABLATION_NOTES = {
    ("w/o MS-Prompt", "pixel_auroc"): "the text says -1.4 on MVTec-AD; Table 8 gives -2.6",
    ("w/o MS-Decoder", "pixel_auroc"): "the text: 'a smaller but consistent decline' (on VisA Table 8's is larger "
                                       "than w/o MS-Prompt's)",
    ("single-scale SAM", "pixel_auroc"): "the text: 'the largest performance drop, particularly on VisA'",
    ("w/o SASA", "accuracy"): "the text says -3.6 on VisA; Table 9 gives -3.7",
    ("w/o SASA", "pixel_auroc"): "the text: 'dropped by only 0.8 % on MVTec-AD'",
    ("point prompt", "pixel_auroc"): "the text: 'significantly worse performance'",
}
METRICS = {"image_auroc": ("image AUROC", 0), "pixel_auroc": ("pixel AUROC", 1), "accuracy": ("accuracy", 2)}


def _ablations() -> list[Claim]:
    full = pv.ABLATIONS["SAM-LLaVA (full)"]
    out = []
    for variant, source in ABLATION_SOURCES.items():
        v = pv.ABLATIONS[variant]
        for metric, (name, i) in METRICS.items():
            blocked = _verdict_answers if metric == "accuracy" else (lambda f: None)
            if variant == "w/o SASA" and metric != "accuracy":
                blocked = _never(SASA_SHARES_SAM)
            out.append(Claim(
                f"{variant}: lower {name}", source, f"{ABLATION_WORDS[variant]} lowers {name}",
                f"MVTec-AD {_delta(full[i], v[i])}, VisA {_delta(full[i + 3], v[i + 3])}", "10",
                Paired("tables7_10_ablations", {"arm": variant, "metric": metric},
                       {"arm": "SAM-LLaVA (full)", "metric": metric},
                       "training seed x support seed x category, scored alike"),
                -1 if v[i] < full[i] else +1, blocked, ABLATION_NOTES.get((variant, metric), "")))
    return out


PAPER_COUNTED = "SAM-LLaVA, paper profile (counted*"
GPU_ROW = "SAM-LLaVA, paper profile, random weights*"


def _complexity() -> list[Claim]:
    s = pv.TABLE11["SAM-LLaVA"]
    share = 100 * s["trainable_M"] / s["total_M"]
    others = min(v["trainable_M"] for k, v in pv.TABLE11.items() if k != "SAM-LLaVA")
    gpu = _never("no L40 here: the GPU row is the paper architectures with random weights on the GPU "
                 "results/gpu_bench.json names, at its precision")
    return [
        Claim("8,334.92 M parameters", "Table 11, Sec. 5.3.5", "SAM-LLaVA has 8,334.92 M parameters in total",
              f"{s['total_M']:,.2f} M", "11", Count("table11_complexity", PAPER_COUNTED, "total_M", s["total_M"])),
        Claim("112.38 M trainable (1.35 %)", "Table 11, Sec. 5.3.5", "only 112.38 M (1.35 %) are trainable",
              f"{s['trainable_M']:g} M ({share:.2f} %)", "11",
              Count("table11_complexity", PAPER_COUNTED, "trainable_M", s["trainable_M"], of="total_M")),
        Claim("31.59 M LoRA (0.38 %)", "Sec. 5.3.5", "LoRA introduces 31.59 M trainable parameters (0.38 %)",
              f"{s['lora_M']:g} M ({100 * s['lora_M'] / s['total_M']:.2f} %)", "11",
              Count("table11_complexity", PAPER_COUNTED, "lora_M", s["lora_M"], of="total_M")),
        Claim("fewest trainable parameters", "Table 11", "fewer trainable parameters than the three LVLM baselines",
              f"{s['trainable_M']:g} M vs {others:g} M at least", "11",
              Count("table11_complexity", PAPER_COUNTED, "trainable_M", s["trainable_M"], below=others)),
        Claim("1,563.86 ms at batch 1", "Table 11, Sec. 5.3.5", "inference latency 1,563.86 ms at batch 1 on an L40",
              f"{s['latency_ms']:,.2f} ms", "11", Shown("table11_complexity", GPU_ROW, "latency_ms", "ms"), 0, gpu),
        Claim("0.64 images/s", "Sec. 5.3.5", "throughput 0.64 images/s", f"{s['throughput_img_s']:g} images/s", "11",
              Shown("table11_complexity", GPU_ROW, "throughput_img_s", "images/s"), 0, gpu),
        Claim("21 GB peak memory", "Sec. 5.3.5", "peak GPU memory 21 GB at batch 1", f"{s['peak_memory_GB']:g} GB",
              "11", Shown("table11_complexity", GPU_ROW, "peak_memory_GB", "GB"), 0,
              _never("the paper states neither its precision nor its attention kernels; ours: random weights at "
                     "the precision results/gpu_bench.json names")),
        Claim("35 h of training", "Table 11, Sec. 5.3.5", "training takes about 35 h on two L40s (28 GB per GPU)",
              f"{s['train_hours']:g} h", "11", None, 0,
              _never("this repository trains the offline profile on a CPU budget, not 50 epochs of the paper models"))]


CLAIMS: tuple[Claim, ...] = (*_table1(), *_fewshot(), *_description(), *_segmentation(), *_ablations(),
                             *_complexity())
