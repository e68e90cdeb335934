"""A diagnosis in report.json's fields and in one printed line."""
from __future__ import annotations

from dataclasses import asdict

from samllava.data.instructions import position_on_grid, shape_word, size_label
from samllava.model.sam_llava import Diagnosis


def report_fields(d: Diagnosis) -> dict:
    """The fields of report.json for one diagnosis: verdict and thresholds, answer and description (where
    its words came from, the facts they may state and the language model's own text), and the masks
    measured (pixels, 3x3 position of M_fine's centre of mass, size and shape words)."""
    return {"category": d.category, "score": d.score, "verdict": d.verdict, "thresholds": d.thresholds,
            "answer": d.answer, "description": d.description, "words_from": d.words_from,
            "facts": None if d.facts is None else asdict(d.facts), "model_text": d.model_text,
            "coarse_mask_pixels": int(d.coarse_mask.sum()), "fine_mask_pixels": int(d.fine_mask.sum()),
            "fine_mask_position": position_on_grid(d.fine_mask), "fine_mask_size": size_label(d.fine_mask),
            "fine_mask_shape": shape_word(d.fine_mask), "coarse_terms": d.terms}


def report_line(row: dict) -> str:
    """One printed line per image of summary.csv."""
    return (f"{row['image']}: {row['verdict']} (score {row['score']:.3f}), answer {row['answer']}, "
            f"position {row['position']}")
