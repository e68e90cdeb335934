"""Prompt ensemble for the zero-shot coarse map (Sec. 3.1, Eq. 1), as data.

The state words and templates follow WinCLIP's compositional prompt ensemble; the anomalous
state ``broken {}`` is AnomalyGPT's (and AnomalyCLIP's) addition. A prompt is
``template.format(state.format(category_phrase))``, e.g. "a photo of the damaged metal nut.".
"""
from __future__ import annotations

NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)

ANOMALOUS_STATES: tuple[str, ...] = (
    "damaged {}",
    "broken {}",  # AnomalyGPT / AnomalyCLIP
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)

TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)

# Data set category name -> the object phrase CLIP reads. MVTec AD (15), VisA (12), the
# textile images (conformal-clip-data) and the synthetic categories of samllava.data.
CATEGORY_PHRASES: dict[str, str] = {
    # MVTec AD
    "bottle": "bottle",
    "cable": "cable",
    "capsule": "capsule",
    "carpet": "carpet",
    "grid": "grid",
    "hazelnut": "hazelnut",
    "leather": "leather",
    "metal_nut": "metal nut",
    "pill": "pill",
    "screw": "screw",
    "tile": "tile",
    "toothbrush": "toothbrush",
    "transistor": "transistor",
    "wood": "wood",
    "zipper": "zipper",
    # VisA
    "candle": "candle",
    "capsules": "capsules",
    "cashew": "cashew",
    "chewinggum": "chewing gum",
    "fryum": "fryum",
    "macaroni1": "macaroni",
    "macaroni2": "macaroni",
    "pcb1": "printed circuit board",
    "pcb2": "printed circuit board",
    "pcb3": "printed circuit board",
    "pcb4": "printed circuit board",
    "pipe_fryum": "pipe fryum",
    # packaged textile images (conformal-clip-data)
    "textile": "textile",
    # synthetic categories (samllava.data.synthetic)
    "fabric": "fabric",
    "wood_grain": "wooden board",
    "metal_plate": "metal plate",
    "concrete": "concrete surface",
    "bottle_cap": "bottle cap",
    "pill_tablet": "pill",
    # synthetic stand-ins for TADD subsets (named after the surface they imitate)
    "tadd_aitex_standin": "fabric",
    "tadd_cfd_standin": "road surface",
    "tadd_crack500_standin": "pavement",
    "tadd_kolektorsdd_standin": "commutator surface",
    "tadd_mt_standin": "magnetic tile",
    "tadd_neu_standin": "steel strip",
    "tadd_rsdd_standin": "rail surface",
}

GENERIC_PHRASE = "object"


def category_phrase(name: str, allow_generic: bool = False) -> str:
    """The CLIP phrase of a data set category (``"metal_nut"`` -> ``"metal nut"``).

    Args:
        name: category folder name as the loaders report it.
        allow_generic: return ``"object"`` for unknown names (custom data) instead of raising.

    Raises:
        ValueError: ``name`` is unknown and ``allow_generic`` is False.
    """
    if name in CATEGORY_PHRASES:
        return CATEGORY_PHRASES[name]
    if allow_generic:
        return GENERIC_PHRASE
    raise ValueError(
        f"unknown category {name!r}: no prompt phrase for it; known categories: {sorted(CATEGORY_PHRASES)} "
        "(pass allow_generic=True to use the generic phrase 'object')"
    )


def prompt_sentences(phrase: str) -> tuple[list[str], list[str]]:
    """All (state x template) sentences for ``phrase``: ``(normal, anomalous)``.

    ``len(normal) == len(NORMAL_STATES) * len(TEMPLATES)``, likewise for anomalous.
    """
    if not isinstance(phrase, str) or not phrase.strip():
        raise ValueError(f"category phrase must be a non-empty string, got {phrase!r}")

    def expand(states: tuple[str, ...]) -> list[str]:
        return [t.format(s.format(phrase)) for s in states for t in TEMPLATES]

    return expand(NORMAL_STATES), expand(ANOMALOUS_STATES)
