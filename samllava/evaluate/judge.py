"""Judges of description quality (Table 6), pluggable.

The paper scores each description with GPT-4V (0-100; correctness, completeness, fine-grained
details, interpretability). Two judges share one interface, ``score(description, truth, image_path)
-> float in [0, 100]``:

* :class:`GroundedJudge` (offline, the default): checks the description's claims against the
  ground truth of the image: defect present or not, position on the 3x3 grid, relative size,
  shape, colour, defect type. Deterministic; it reads text, not pixels, so it rewards only claims
  that the mask and annotations confirm.
* :class:`OpenAIJudge`: any OpenAI-compatible chat-completions endpoint with a vision model
  (``base_url``, ``model``, ``api_key`` or ``$OPENAI_API_KEY``), prompted with the paper's four
  criteria; it returns the number the model gives.

Every table built with a judge names it (:attr:`Judge.name`).
"""
from __future__ import annotations

import base64
import json
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from samllava.data.instructions import parse_position
from samllava.metrics import parse_yes_no


class Judge(Protocol):
    name: str

    def score(self, description: str, truth: dict, image_path: str | Path | None = None) -> float: ...


def _mentions(text: str, word: str | None) -> bool:
    return bool(word) and re.search(rf"\b{re.escape(str(word).lower())}\b", text.lower()) is not None


@dataclass
class GroundedJudge:
    """Mask-grounded consistency score.

    ``truth``: ``label`` (0/1) and, for defects, ``position``, ``size``, ``shape``, ``colour``,
    ``defect_type`` (the synthetic annotations; absent keys are not scored). An answer that gets
    the presence wrong scores 0. A normal image scores 100 when the text says there is no defect
    (50 when it also names a grid position); a defective image scores 40 for the right "yes" plus an equal share
    of the remaining 60 for each annotated attribute it states correctly (position, size, shape,
    colour, defect type).
    """

    name: str = "grounded (offline, mask- and annotation-consistency)"

    def score(self, description: str, truth: dict, image_path: str | Path | None = None) -> float:
        said = parse_yes_no(description)
        if said is None or said != bool(truth["label"]):
            return 0.0
        if not truth["label"]:
            return 50.0 if parse_position(description) else 100.0  # a located "no" hints at an invented defect
        keys = [
            k for k in ("position", "size", "shape", "colour", "defect_type") if truth.get(k) not in (None, "", "none")
        ]
        if not keys:
            return 100.0
        hits = 0
        for k in keys:
            if k == "position":
                hits += parse_position(description) == truth["position"]
            elif k == "shape":
                hits += any(_mentions(description, w) for w in str(truth["shape"]).split())
            else:
                hits += _mentions(description, truth[k])
        return 40.0 + 60.0 * hits / len(keys)


PROMPT = ("You are grading a defect description of an industrial image. Score it from 0 to 100 for "
          "correctness (does it reflect the defect or its absence), completeness (are the defect's "
          "attributes covered), fine-grained details (position, colour, shape, category) and "
          "interpretability (clear and actionable). Ground truth: {truth}. Description: \"{description}\". "
          "Answer with the number only.")


@dataclass
class OpenAIJudge:
    """An OpenAI-compatible chat-completions endpoint as the judge (GPT-4V in the paper)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    name: str = "OpenAI-compatible endpoint"

    def __post_init__(self) -> None:
        self.name = f"{self.model} at {self.base_url}"

    def _request(self, description: str, truth: dict, image_path) -> dict:
        content = [{"type": "text", "text": PROMPT.format(truth=json.dumps(truth), description=description)}]
        if image_path is not None:
            data = base64.b64encode(Path(image_path).read_bytes()).decode()
            suffix = Path(image_path).suffix.lower().lstrip(".").replace("jpg", "jpeg")
            content.append({"type": "image_url", "image_url": {"url": f"data:image/{suffix};base64,{data}"}})
        return {"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0}

    def score(self, description: str, truth: dict, image_path: str | Path | None = None) -> float:
        key = self.api_key or os.environ.get("OPENAI_API_KEY", "")
        req = urllib.request.Request(self.base_url.rstrip("/") + "/chat/completions",
                                     data=json.dumps(self._request(description, truth, image_path)).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            reply = json.loads(r.read())
        text = reply["choices"][0]["message"]["content"]
        m = re.search(r"\d+(\.\d+)?", text)
        if m is None:
            raise ValueError(f"judge {self.name}: reply has no score: {text!r}")
        return max(0.0, min(100.0, float(m.group())))


def make_judge(config: dict | None) -> Judge:
    """``None`` or ``{}`` -> :class:`GroundedJudge`; ``{"base_url": ..., "model": ...}`` -> :class:`OpenAIJudge`."""
    if not config:
        return GroundedJudge()
    missing = {"base_url", "model"} - set(config)
    if missing:
        raise ValueError(f"judge configuration needs {sorted(missing)} (got {sorted(config)})")
    return OpenAIJudge(**config)
