"""How true a description's words are, on labelled data: the hallucination measure.

For every image the words a diagnosis reports are the language model's answer checked against the facts
measured from the image and M_fine (:meth:`samllava.model.sam_llava.SamLlava.words`). Counted per data set:

* **hallucinated**: the reported words claim something the facts contradict: an object other than the
  category, a colour the pixels do not show, a defect type or position the mask does not support, a
  defect where none is marked or none where one is (the yes/no verdict's own errors are the yes/no
  accuracy's business, not counted here);
* **the model's own text hallucinated**: the same count on the language model's text before the check, and
  how often its text was cut mid-sentence by the token budget;
* **against the labels**, on the defective images judged defective: the named position against the true
  one, and the named defect type against the labelled one where the label names a type the measurements
  can tell (:data:`LABEL_KINDS`); "contradicted by the labels" counts either being wrong.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from samllava.core.device import to_device
from samllava.data import CategoryData
from samllava.describe.facts import Facts
from samllava.describe.wording import complete, contradictions, said
from samllava.evaluate.answers import answer
from samllava.model.encoded_data import Examples, prepare
from samllava.model.sam_llava import SamLlava

# A labelled defect type -> the type a description can name from the measurements; other labels (e.g.
# MVTec's "bent" or "missing") name what no measurement of a mask tells, and are not scored for type.
LABEL_KINDS = {"crack": "scratch or crack", "scratch": "scratch or crack", "cut": "scratch or crack",
               "hole": "dark spot or hole", "poke": "dark spot or hole", "stain": "stain", "color": "stain",
               "oil": "stain", "liquid": "stain", "glue": "stain", "contamination": "specks"}


@torch.no_grad()
def reported_words(model: SamLlava, examples: list[Examples], answers: list[list[str]]
                   ) -> list[list[tuple[str, str, Facts]]]:
    """Per example and image: the words a diagnosis reports, where they came from and the facts behind them."""
    out = []
    for ex, texts in zip(examples, answers):
        mask = model.fine(to_device(ex.enc, model.device)).mask
        facts = model.facts(ex.enc.images, mask, ex.questions)
        out.append([(*model.words(t, f), f) for t, f in zip(texts, facts)])
    return out


def image_record(text: str, words: str, source: str, f: Facts, label: int, position: str, defect_type: str) -> dict:
    """The counts of one image (see the module docstring)."""
    rec = {"hallucinated": bool(contradictions(words, f)), "model_hallucinated": bool(contradictions(text, f)),
           "from_model": source == "language model", "cut": complete(text) != text.strip(),
           "position_ok": np.nan, "type_named": np.nan, "type_ok": np.nan}
    if label == 1 and f.defect:
        s = said(words)
        truth = LABEL_KINDS.get(defect_type)
        rec["position_ok"] = float(s.position == position) if position != "none" else np.nan
        rec["type_named"] = float(bool(s.kinds)) if truth else np.nan
        rec["type_ok"] = float(truth in s.kinds) if truth and s.kinds else np.nan
    return rec


def words_eval(model: SamLlava, data: dict[str, CategoryData], shots: int = 1, seed: int = 0,
               max_new_tokens: int | None = None) -> pd.DataFrame:
    """One row per image of ``data`` (every test image, K support images of seed ``seed``): its counts."""
    size = model.profile.data.image_size
    examples = prepare(model, data, size, shots=shots, seed=seed, progress=False)
    answers = answer(model, examples, max_new_tokens=max_new_tokens, progress=False)
    rows = []
    for ex, texts, words in zip(examples, answers, reported_words(model, examples, answers)):
        for i, (text, (w, source, f)) in enumerate(zip(texts, words)):
            rows.append({"category": ex.category, "label": int(ex.labels[i]),
                         **image_record(text, w, source, f, int(ex.labels[i]), ex.positions[i], ex.defect_types[i])})
    return pd.DataFrame(rows)


def words_summary(rows: pd.DataFrame) -> dict[str, float]:
    """Percentages over one data set's images (type and position over the defective images judged defective)."""
    wrong = rows[["position_ok", "type_ok"]].apply(lambda r: float(any(v == 0 for v in r)) if r.notna().any()
                                                   else np.nan, axis=1)
    return {"images": len(rows), "hallucinated": 100 * rows["hallucinated"].mean(),
            "model_text_hallucinated": 100 * rows["model_hallucinated"].mean(),
            "words_from_model": 100 * rows["from_model"].mean(), "model_text_cut": 100 * rows["cut"].mean(),
            "position_accuracy": 100 * rows["position_ok"].mean(), "type_named": 100 * rows["type_named"].mean(),
            "type_accuracy": 100 * rows["type_ok"].mean(), "contradicted_by_labels": 100 * wrong.mean()}
