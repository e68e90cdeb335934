"""Each equation of the paper is computed in one named place whose docstring cites it, and the README's
map of the equations points at the same places."""
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Eq. 3 defines two quantities, computed apart (F_sam once per image, E_prompt per coarse mask).
EQUATIONS = {
    1: ["samllava.coarse.otsu.otsu_masks"],
    2: ["samllava.coarse.stage.calibrated_map"],
    3: ["samllava.sam.cascade.SamCascade.embed", "samllava.sam.cascade.SamCascade.prompt_embeddings"],
    4: ["samllava.sam.multiscale.MultiScaleMaskDecoder.forward"],
    5: ["samllava.sam.multiscale.MultiScalePromptLearner.multi_scale_prompt"],
    6: ["samllava.sam.losses.segmentation_loss"],
    7: ["samllava.describe.sasa.BidirectionalCrossAttentionLayer.vision_to_text"],
    8: ["samllava.describe.sasa.BidirectionalCrossAttentionLayer.text_to_vision"],
    9: ["samllava.model.sam_llava.total_loss"],
    10: ["samllava.describe.llava.Describer.loss"],
}


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("number", sorted(EQUATIONS))
def test_equation_has_one_named_function_citing_it(number):
    for dotted in EQUATIONS[number]:
        doc = _resolve(dotted).__doc__ or ""
        assert re.search(rf"Eq\. {number}\b", doc), f"{dotted}'s docstring does not cite Eq. {number}"


def test_readme_maps_every_equation_to_its_function():
    readme = (ROOT / "README.md").read_text()
    for number, names in EQUATIONS.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| {number} |")), None)
        assert row is not None, f"README has no row for Eq. {number}"
        for dotted in names:
            short = dotted.removeprefix("samllava.")
            assert short in row, f"README's row for Eq. {number} does not name {short}"
