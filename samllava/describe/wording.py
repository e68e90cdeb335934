"""Words from measured facts (:mod:`samllava.describe.facts`), and generated text checked against them.

* :func:`facts_sentence` is what the language model reads before the question:
  the image's colour and the marked region's size, shape, position, contrast and type.
* :func:`description` says the same facts as complete sentences: the description a diagnosis reports
  when the language model's own text is not used.
* :func:`said` reads back what a text claims (objects, colours, defect types, position, whether there is a
  defect) and :func:`contradictions` lists every claim the facts do not support; :func:`checked_words`
  keeps the model's text only when it has none and its sentences are complete (``llm.check_words``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from samllava.data.instructions import ANSWER_ANOMALY, ANSWER_NORMAL, NO_POSITION, article, parse_position
from samllava.describe.facts import GREYS, Facts

NO_REGION_TEXT = "The segmentation marks no region."
# Object nouns a description could wrongly put in the image (any other noun is not checked). The category's
# own words and the neutral subject are always allowed.
OBJECT_NOUNS = frozenset((
    "car", "cat", "dog", "person", "man", "woman", "face", "hand", "finger", "plate", "bottle", "cap", "pill",
    "tablet", "capsule", "cable", "wire", "screw", "nut", "hazelnut", "carpet", "grid", "leather", "tile", "wood",
    "zipper", "toothbrush", "transistor", "metal", "brick", "wall", "grass", "lawn", "gravel", "textile", "fabric",
    "cup", "coffee", "clock", "coin", "coins", "rocket", "camera", "tree", "sky", "road", "board", "steel",
    "concrete", "pcb", "candle", "cashew", "chewinggum", "gum", "fryum", "macaroni", "pipe", "tissue", "moon",
    "building", "house", "box", "phone", "bird", "flower", "fruit", "apple", "banana", "book", "chair", "table",
))
COLOURS = frozenset(("black", "white", "grey", "gray", "red", "orange", "brown", "yellow", "green", "cyan", "blue",
                     "purple", "pink", "beige", "silver", "golden", "gold"))
# Defect types a text can claim (normalised); no measurement decides one (samllava.describe.facts), so a text
# that names any of them is contradicted.
KINDS = ("scratch or crack", "specks", "dark spot or hole", "light spot", "stain")
KIND_WORDS = {"scratch": "scratch or crack", "scratches": "scratch or crack", "crack": "scratch or crack",
              "cracks": "scratch or crack", "speck": "specks", "specks": "specks", "contamination": "specks",
              "hole": "dark spot or hole", "holes": "dark spot or hole", "stain": "stain", "stains": "stain",
              "discoloration": "stain", "dent": None, "cut": None, "tear": None, "spot": None, "spots": None}
_WORD = re.compile(r"[a-z]+")
_NO_DEFECT = re.compile(r"\b(no defect|no anomaly|not? (?:any )?(?:defect|anomaly)|there is no|is intact|looks intact)")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def facts_sentence(f: Facts) -> str:
    """What the language model reads before the question: the marked region in words, or that there is none."""
    if not f.defect:
        return f"The image is mostly {f.surface}. {NO_REGION_TEXT}"
    return (f"The image is mostly {f.surface}. The segmentation marks a {f.size} {f.shape} region at the "
            f"{f.position} of the image{_contrast(f)}.")


def _contrast(f: Facts) -> str:
    parts = [f"{f.tone} than its surroundings"] if f.tone else []
    parts += [f"{f.colour}"] if f.colour else []
    return (", " + " and ".join(parts)) if parts else ""


def description(f: Facts) -> str:
    """The facts as complete sentences (the subject, its colour, and the defect or its absence)."""
    opening = f"This is a photo of {f.subject}, {f.surface} overall."
    if not f.defect:
        return f"{opening} No defect is visible."
    return (f"{opening} There is {article(f.size)} {f.size} defect at the {f.position} of the image: "
            f"{article(f.shape)} {f.shape} region{_contrast(f)}.")


def answer_and_description(f: Facts) -> str:
    """The whole answer a diagnosis gives from the facts alone: the yes/no sentence, then :func:`description`."""
    answer = ANSWER_ANOMALY.format(position=f.position) if f.defect else ANSWER_NORMAL
    return f"{answer} {description(f)}"


@dataclass(frozen=True)
class Said:
    """What a text claims."""

    objects: frozenset[str]
    colours: frozenset[str]
    kinds: frozenset[str]  # normalised to KINDS; words that name no measurable kind are left out
    position: str | None
    defect: bool | None  # True: names a defect; False: says there is none; None: neither


def said(text: str) -> Said:
    """The claims of ``text`` (lower-cased word matches; "grey" and "gray" are one colour)."""
    low = text.lower()
    words = set(_WORD.findall(low))
    named = {KIND_WORDS[w] for w in words if w in KIND_WORDS}
    no_defect = bool(_NO_DEFECT.search(low))
    defect = False if no_defect and not named else True if named or "defect" in words or "anomaly" in words else None
    return Said(frozenset(words & OBJECT_NOUNS), frozenset("grey" if w == "gray" else w for w in words & COLOURS),
                frozenset(k for k in named if k is not None), parse_position(low), defect)


def allowed_colours(f: Facts) -> set[str]:
    """Colour words the facts support: the surface's and the region's, a grey's neighbours on the grey scale,
    and those of the category's own name (a "red bottle cap")."""
    out = set(_WORD.findall(f.subject.lower())) & COLOURS
    for word in (f.surface, f.colour):
        if word in GREYS:
            i = GREYS.index(word)
            out |= {w.split()[-1] for w in GREYS[max(0, i - 1):i + 2]}
        elif word:
            out.add(word)
    if f.tone == "darker":
        out.add("black")
    if f.tone == "lighter":
        out.add("white")
    return out


def contradictions(text: str, f: Facts) -> list[str]:
    """Each claim of ``text`` that the facts contradict (an empty list: the text says only what is measured)."""
    s = said(text)
    own = set(_WORD.findall(f.subject.lower()))
    out = [f"names {o!r}, not the category ({f.subject})" for o in sorted(s.objects - own)]
    out += [f"says colour {c!r}, measured {sorted(allowed_colours(f))}" for c in sorted(s.colours - allowed_colours(f))]
    if s.defect is not None and s.defect != f.defect:
        out.append("names a defect where none is marked" if s.defect else "says there is no defect where one is marked")
    if f.defect:
        out += [f"names a {k}, which no measurement decides" for k in sorted(s.kinds)]
        if s.position is not None and s.position != f.position:
            out.append(f"says position {s.position!r}, the mask is at the {f.position}")
    elif s.position is not None:
        out.append(f"names a position ({s.position}) where no region is marked")
    return out


def complete(text: str) -> str:
    """``text`` up to its last complete sentence ("" when it has none)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text.strip())]
    return text.strip()[:ends[-1]] if ends else ""


def checked_words(text: str, f: Facts) -> tuple[str, str]:
    """The words to report and where they came from: the model's ``text`` cut to complete sentences when it
    contradicts none of the facts and states them (for a defect: its position), else
    :func:`answer_and_description` of the facts."""
    kept = complete(text)
    problems = contradictions(kept, f) if kept else ["no complete sentence"]
    if not problems and f.defect and said(kept).position != f.position:
        problems = ["does not say where the defect is"]
    if problems:
        return answer_and_description(f), "facts (the model's text: " + "; ".join(problems) + ")"
    return kept, "language model"


__all__ = ["KINDS", "NO_POSITION", "Said", "answer_and_description", "checked_words", "complete", "contradictions",
           "description", "facts_sentence", "said"]
