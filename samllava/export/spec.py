"""What an export is, for both of its sides (no torch here): its files, its format and its defaults.

``samllava export --out model.onnx`` writes three files (:func:`model_files`), which the runner reads.
"""
from __future__ import annotations

import os
from pathlib import Path

FORMAT = 1  # bump when the files' layout or the JSON's meaning changes
OPSET = 18  # ONNX opset of both graphs
MEMORY_CAP = 16384  # memory patches per level in an export (about a tenth of a 200-image offline support)
DETECT_INPUTS, DETECT_OUTPUTS = ("images",), ("decision", "score", "embedding", "calibration")
FINE_INPUTS, FINE_OUTPUTS = ("embedding", "coarse"), ("logits",)
NOT_EXPORTED = ("the language model and its words (the description; the answer is the verdict's, as "
                "llm.answer_from_verdict starts it), SASA, the facts measured for the words, overlay.png and "
                "report.json")


def model_files(model: str | os.PathLike) -> dict[str, Path]:
    """The files of an export named ``model.onnx``: ``detect`` (that file), ``fine`` (``model.fine.onnx``) and
    ``json`` (``model.json``)."""
    model = Path(model)
    stem = model.with_suffix("") if model.suffix == ".onnx" else model
    return {"detect": stem.with_suffix(".onnx"), "fine": stem.with_name(stem.name + ".fine.onnx"),
            "json": stem.with_suffix(".json")}
