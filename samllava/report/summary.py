"""``results/SUMMARY.md``: the headline numbers of a run, read from its tables, beside the paper's.

Prose that quotes results by hand drifts from them; this page is written by the reproduce run (and by
``samllava summary``) from the tables themselves, with the profile and data set of each table, read
from the table's own header. Each :class:`Headline` names a table, the rows and columns of this run's
number, and the row and columns of the paper's number in the same table (tables print the paper's
values beside this run's, so nothing here is typed in twice).
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from samllava.core import results
from samllava.core.config import load_profile
from samllava.report.paper_values import MEAN_ROW, PAPER_MEAN_ROW
from samllava.report.comparison import std_column

GPU_BENCH = "gpu_bench.json"  # the paper-size GPU benchmark (benchmarks/gpu_bench.py) beside the tables


@dataclass(frozen=True)
class Headline:
    """One line of the summary: ``{column: pattern}`` selects rows (fnmatch patterns), ``columns`` the
    numbers shown (values of several rows joined by " / ")."""

    table: str
    what: str
    ours: dict[str, str]
    columns: tuple[str, ...]
    paper: dict[str, str] = field(default_factory=dict)
    paper_columns: tuple[str, ...] = ()
    labels: bool = True  # name each column before its numbers (False: ``what`` gives their order)
    verdict_note: bool = False  # say when the yes/no is the calibrated verdict's (llm.answer_from_verdict)
    profile: str | None = None  # the profile column's text when the table's own header does not say it ({gpu})


HEADLINES: tuple[Headline, ...] = (
    Headline("table1_zero_shot", "zero-shot image / pixel AUROC, VisA -> MVTec-AD then MVTec-AD -> VisA (Table 1)",
             {"method": "SAM-LLaVA coarse + SAM (this run)"}, ("*AUROC",), {"method": "SAM-LLaVA (paper)"},
             ("*AUROC",), labels=False),
    *(Headline(f"table{t}_fewshot_{k}shot", f"{k}-shot pixel AUROC (Table {t}, Fig. 2): this run's mean over its "
               "stand-in subsets beside the paper's mean over its 21 TADD subsets, not the same subsets",
               {"subset": MEAN_ROW}, ("SAM-LLaVA (this run)",), {"subset": PAPER_MEAN_ROW}, ("SAM-LLaVA (paper)",))
      for t, k in ((2, 1), (3, 2), (4, 4))),
    Headline("table5_description_accuracy", "yes/no description accuracy, K = 1 / 2 / 4 (Table 5)",
             {"method": "SAM-LLaVA (this run)"}, ("accuracy",), {"method": "SAM-LLaVA (paper)"},
             ("paper MVTec-AD", "paper VisA"), verdict_note=True),
    Headline("description_words", "descriptions whose words contradict the category or the measurements "
             "(hallucinated); on defective images judged defective, a position or type the labels contradict, and "
             "how often a defect type is named (%); K = 4, per data set (synthetic / textiles / real textures)",
             {"data": "*"}, ("hallucinated", "contradicted_by_labels", "type_named")),
    Headline("table6_judge", "judge score, all images (Table 6; the paper's judge is GPT-4V)",
             {"method": "SAM-LLaVA (this run*"}, ("all",), {"method": "SAM-LLaVA (paper*"}, ("all",)),
    *(Headline("tables7_10_ablations", f"{v}: image / pixel AUROC, accuracy (Tables 7-10)", {"variant": v},
               ("image_auroc", "pixel_auroc", "accuracy"), {"variant": v},
               ("paper MVTec image", "paper MVTec pixel", "paper MVTec acc"))
      for v in ("SAM-LLaVA (full)", "w/o CLIP-SAM cascade", "w/o SASA")),
    Headline("table11_complexity", "latency (ms) and throughput (images/s) at batch 1, this profile (Table 11)",
             {"model": "SAM-LLaVA, * profile (this run*", "batch": "1"}, ("latency_ms", "throughput_img_s"),
             {"model": "SAM-LLaVA (paper*"}, ("latency_ms", "throughput_img_s")),
    Headline("table11_complexity", "latency (ms) and throughput (images/s) at batch 1, the paper's architectures "
             "with random weights on a GPU (Table 11; the paper's: an L40)",
             {"model": "SAM-LLaVA, paper profile, random weights*", "batch": "1"},
             ("latency_ms", "throughput_img_s"), {"model": "SAM-LLaVA (paper*"}, ("latency_ms", "throughput_img_s"),
             profile="paper architectures, random weights, {gpu} (results/gpu_bench.json)"),
    Headline("segmentation_coarse_vs_fine", "pixel AUROC / mask IoU, coarse only then coarse + SAM (Sec. 3.2)",
             {"method": "*"}, ("pixel_auroc", "mask_iou")),
    *(Headline("coarse_fewshot_vs_knn", f"synthetic image AUROC, {name}, K = 1 / 2 / 4",
               {"data": "synthetic", "method": pattern}, ("image_auroc",))
      for name, pattern in (("calibrated coarse map", "SAM-LLaVA coarse*"), ("k-NN", "PatchCore*"))),
    Headline("training_before_after", "held-out yes/no and position accuracy after training (mean row)",
             {"category": "mean"}, ("accuracy_after", "position_accuracy_after")),
)


def _cell_text(v) -> str:
    """A cell as a pattern sees it: a whole number read as a float (an integer column with a blank cell,
    e.g. Table 11's ``batch``) is written as an integer, ``1`` and not ``1.0``."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _rows(df: pd.DataFrame, select: dict[str, str]) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    for col, pattern in select.items():
        if col not in df.columns:
            return df.iloc[0:0]
        keep &= df[col].map(lambda v, p=pattern: fnmatch.fnmatchcase(_cell_text(v), p))
    return df[keep]


def _number(v) -> str:
    if pd.isna(v):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _numbers(df: pd.DataFrame, select: dict[str, str], patterns: tuple[str, ...], labels: bool = True) -> str:
    """The selected cells: per column the rows' values joined by " / ", columns joined by "; " (or by " / "
    without ``labels``)."""
    if not select:
        return ""
    rows = _rows(df, select)
    cols = [c for p in patterns for c in df.columns if fnmatch.fnmatchcase(str(c), p)]
    if rows.empty or not cols:
        return "not in the table"
    parts = []
    for c in dict.fromkeys(cols):
        sc = std_column(c, list(df.columns))  # the spread the table states, as the reproduction check reads it
        std = rows[sc] if sc else pd.Series(float("nan"), index=rows.index)
        vals = " / ".join(_number(v) + ("" if pd.isna(sd) else f" ± {_number(sd)}") for v, sd in zip(rows[c], std))
        parts.append(vals if len(cols) == 1 or not labels else f"{c}: {vals}")
    return ("; " if labels else " / ").join(parts)


def _answers_from_verdict(profile: str) -> bool:
    """Whether the named profile's yes/no is the calibrated verdict's (False for a name that is no profile)."""
    try:
        return bool(load_profile(profile).llm.answer_from_verdict)
    except (FileNotFoundError, ValueError, KeyError):
        return False


def _gpu(directory: Path) -> str:
    """The GPU of ``directory``'s ``gpu_bench.json`` (the paper-size benchmark), or "a GPU"."""
    try:
        return str(json.loads((directory / GPU_BENCH).read_text())["gpu"]["device"])
    except (OSError, ValueError, KeyError, TypeError):
        return "a GPU"


def summary_rows(directory: Path | None = None) -> list[dict[str, str]]:
    """One dict per :data:`HEADLINES` entry: table, what, this run, paper, profile, data, commit, date."""
    directory = Path(directory or results.RESULTS_DIR)
    out = []
    for h in HEADLINES:
        path = directory / f"{h.table}.csv"
        row = {"table": f"[{h.table}]({h.table}.md)", "what": h.what}
        if not path.is_file():
            out.append({**row, "this run": "not produced", "paper": "", "profile": "", "data": "", "commit": ""})
            continue
        df, head = results.read_table(path), results.read_header(path)
        if h.verdict_note and _answers_from_verdict(head.get("profile", "")):
            row["what"] += ": the calibrated verdict's yes/no (llm.answer_from_verdict), not the language model's"
        profile = h.profile.format(gpu=_gpu(directory)) if h.profile else head.get("profile", "unknown")
        out.append({**row, "this run": _numbers(df, h.ours, h.columns, h.labels),
                    "paper": _numbers(df, h.paper, h.paper_columns, h.labels) or "(no paper number)",
                    "profile": profile,
                    "data": head.get("dataset") or head.get("data", "unknown"),
                    "commit": f"{head.get('commit', 'unknown')[:10]}, {head.get('date', 'unknown')[:10]}"})
    return out


def write_summary(directory: Path | None = None, run: dict | None = None) -> Path:
    """Write ``SUMMARY.md`` into ``directory`` (default ``results/``) from the tables there."""
    directory = Path(directory or results.RESULTS_DIR)
    rows = summary_rows(directory)
    head = results.header(run, note="written by samllava.report.summary from the tables in this folder: "
                                    "do not edit by hand")
    cols = ["table", "what", "this run", "paper", "profile", "data", "commit"]
    lines = [
        *(f"> **{k}**: {v}  " for k, v in head),
        "",
        "# Headline numbers of the run",
        "",
        "This run's numbers beside the paper's, each with the profile and data of the table it comes from. "
        "A number from random or stand-in weights, or from synthetic stand-in data, is not comparable with the "
        "paper's, which were measured on the real data sets with the real models: only rows with the `paper` "
        "profile on MVTec-AD / VisA / TADD compare. What the run says about each of the paper's claims, with "
        "an interval and a verdict: [CLAIMS.md](CLAIMS.md).",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
        *("| " + " | ".join(r[c].replace("|", "/") for c in cols) + " |" for r in rows),
    ]
    return results.write_text(directory / "SUMMARY.md", "\n".join(lines) + "\n")
