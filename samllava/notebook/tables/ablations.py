"""Tables 7-10: the ablation variants as configuration changes, measured in one harness."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from samllava.evaluate.answers import description_eval
from samllava.coarse.backbone import CachedExtractor
from samllava.core.config import Profile
from samllava.data import CategoryData
from samllava.evaluate.harness import CascadeMethod, CoarseMethod, evaluate
from samllava.core.memo import ContentMemo
from samllava.metrics import mean_std
from samllava.report.paper_values import ABLATIONS as PAPER
from samllava.report.runs import RunLog
from samllava.notebook.tables.data import synthetic
from samllava.notebook.tables.detection import seed_stats
from samllava.notebook.tables.trained import cascade_inputs, placed_cascade, train_cascade, trained_model
from samllava.notebook.tables.training_seeds import (
    TRAINING_SEEDS, answer_training_seeds, pool_training_seeds, training_seeds_note, with_training_seed,
)

# Tables 7-10: each variant is a set of configuration changes.
ABLATIONS: dict[str, dict] = {
    "SAM-LLaVA (full)": {},
    "w/o CLIP-SAM cascade": {"sam.prompt": "none", "multiscale.prompt_learner": False},
    "w/o MS-Prompt": {"multiscale.prompt_learner": False},
    "w/o MS-Decoder": {"multiscale.decoder": False},
    "single-scale SAM": {"multiscale.prompt_learner": False, "multiscale.decoder": False},
    "w/o SASA": {"sasa.enabled": False},
    "box prompt": {"sam.prompt": "box"},
    "point prompt": {"sam.prompt": "point"},
}
# How each variant is scored. Tables 7, 8 and 10 compare SAM's segmentation: a variant of the cascade, the
# multi-scale parts or the prompt is scored on SAM's own output (its mask logits; the image score their max),
# and compared with the full model scored alike (FULL_SAM_ONLY): a mean with H' would dilute the change to SAM.
# "w/o SASA" keeps the full model's SAM side and is scored as the full model is (mean of H' and SAM's probability).
SAM_SCORED = ("w/o CLIP-SAM cascade", "w/o MS-Prompt", "w/o MS-Decoder", "single-scale SAM", "box prompt",
              "point prompt")
PIXEL_MAP = {name: "sam" for name in SAM_SCORED}
# A row that is no variant of the paper: the full model's SAM scored alone, the reference of the SAM_SCORED rows.
FULL_SAM_ONLY = "SAM-LLaVA (full), scored on SAM's output alone"
FULL = "SAM-LLaVA (full)"

# What each variant removes and keeps, in this implementation (the table's note).
DEFINITIONS: dict[str, str] = {
    "SAM-LLaVA (full)": "coarse map (Eq. 1-2) -> mask prompt + multi-scale prompt (Eq. 5) -> SAM with the "
                        "multi-scale decoder; pixel map = mean of H' and SAM's mask probability, image score its max",
    "w/o CLIP-SAM cascade": "SAM without any prompt from CLIP (no mask prompt, so no multi-scale prompt either), "
                            "multi-scale decoder kept, its own SAM side trained; no coarse map anywhere",
    FULL_SAM_ONLY: "the full model's SAM side, with its CLIP prompts, scored on SAM's own output (not a paper "
                   "variant: the row the variants scored on SAM's output are compared with)",
    "w/o MS-Prompt": "multi-scale prompt (Eq. 5) removed; mask prompt and multi-scale decoder kept",
    "w/o MS-Decoder": "multi-scale decoder removed (mid branch only); mask prompt and multi-scale prompt kept",
    "single-scale SAM": "multi-scale prompt and decoder both removed; mask prompt kept",
    "w/o SASA": "SASA's cross-attention (Eq. 7-8) removed: V_0 and T_0 projected and concatenated; keeps the "
                "full model's SAM side (so its detection numbers equal the full model's by construction), the "
                "facts sentence (samllava.describe.wording) and the cell words (samllava.describe.sasa)",
    "box prompt": "box of the coarse mask instead of the mask (the multi-scale prompt, made from the mask, goes "
                  "with it); multi-scale decoder kept",
    "point prompt": "points of the coarse mask's components instead of the mask (the multi-scale prompt goes "
                    "with it); multi-scale decoder kept",
}


def ablation_note(seeds, steps: int, lr: float, epochs: int, accuracy_variants, per_label,
                  train_seeds=TRAINING_SEEDS, answer_seeds=None) -> str:
    """The note of the ablation table: budgets, what the ± covers and, for every row, what it removes and keeps.
    ``answer_seeds``: the training seeds behind the accuracy column (:func:`answer_training_seeds`)."""
    rows = "; ".join(f"[{name}] {text}" for name, text in DEFINITIONS.items())
    answer_seeds = list(train_seeds if answer_seeds is None else answer_seeds)
    return (f"1-shot, support seeds {list(seeds)}; each SAM side trained {steps} steps at lr {lr}, once per training "
            f"seed: image and pixel AUROC are the {training_seeds_note(train_seeds)}; accuracy: {epochs} epoch(s) end "
            f"to end for {list(accuracy_variants)} ({per_label} normal + {per_label} anomalous images per category), "
            f"training seeds {answer_seeds}, empty elsewhere. Scoring: pixel map = mean of H' and SAM's mask "
            f"probability for [{FULL}] and [w/o SASA]; SAM's own output (its mask logits) for {list(SAM_SCORED)} and "
            f"[{FULL_SAM_ONLY}], the row they are compared with (Tables 7, 8 and 10 compare SAM's segmentation); "
            f"image score = the max of the row's pixel map. Paper columns: the paper's MVTec-AD and VisA numbers. "
            f"Rows: {rows}")


def accuracy_variants_for(profile: Profile, variants) -> list[str]:
    """The variants whose yes/no accuracy is worth a training run: all of ``variants`` where the language
    model answers by itself; the full model alone where the answer's yes/no is the calibrated verdict's
    (``llm.answer_from_verdict``): every variant keeps the coarse stage the verdict comes from, so each
    would score exactly the full model's accuracy."""
    full = "SAM-LLaVA (full)"
    return [v for v in variants if v == full] if profile.llm.answer_from_verdict else list(variants)


def ablation_table(profile: Profile, data: dict[str, CategoryData], steps: int = 150, lr: float | None = None,
                   seeds=(0,), accuracy_variants=(), per_label: int | None = None,
                   device: str | torch.device | None = None, train_seeds=TRAINING_SEEDS,
                   runs: RunLog | None = None) -> pd.DataFrame:
    """Tables 7-10 in one table: image/pixel AUROC per variant (SAM side trained ``steps`` per variant and
    training seed, 1-shot; image score = max of the variant's pixel map, :data:`PIXEL_MAP`), mean and
    ``_std`` over ``train_seeds``; and, for ``accuracy_variants`` (:func:`accuracy_variants_for`), the yes/no
    accuracy of the variant trained end to end with the profile's budget (the full variant is the main model
    of notebook 05, cached) over :func:`answer_training_seeds`, on a balanced subset of ``per_label``
    images per label and category. :data:`DEFINITIONS` says what each row removes and keeps.

    ``runs``: gets every value pooled, per training seed, support seed and category, with the scoring
    (``scored_on``: "combined", "sam" or "answer"); the :data:`FULL_SAM_ONLY` row is logged as the full
    variant scored on "sam", so that a variant pairs with the full model scored alike."""
    # The variants differ only in SAM's prompting and decoder, so the frozen work is shared: the few-shot
    # backbone's features are computed once for all variants and seeds; SAM's image embeddings and the
    # SAM-side training inputs once per training seed (a random stand-in encoder is drawn with the seed).
    coarse = CoarseMethod(profile, device=device)
    coarse.coarse.calibrator.extractor = CachedExtractor(coarse.coarse.calibrator.extractor)
    train_data = synthetic(profile, "train")
    size = profile.data.image_size
    tables = []
    for train_seed in train_seeds:
        seeded = with_training_seed(profile, train_seed)
        encoder = placed_cascade(seeded, coarse.device)  # every variant's image encoder is this one (same config, seed)
        embed = ContentMemo(encoder.embed, max_batches=64)
        train_inputs = lru_cache(maxsize=1)(lambda e=encoder: cascade_inputs(coarse, e, train_data, shots=1))
        rows, trained_sam = [], {}
        for name, changes in ABLATIONS.items():
            variant = seeded.replace(**changes) if changes else seeded
            sam_key = (variant.sam.prompt, variant.multiscale.prompt_learner, variant.multiscale.decoder)
            if sam_key not in trained_sam:  # "w/o SASA" shares the full model's SAM side
                cascade = train_cascade(variant, steps=steps, lr=lr, shots=1, coarse=coarse, data=train_data,
                                        progress=False, inputs=train_inputs)[1]
                cascade.sam.image_encoder = encoder.sam.image_encoder  # frozen and identical (test_pipeline): share it
                trained_sam[sam_key] = cascade
            scored = [(name, PIXEL_MAP.get(name, "combined"))]
            if name == "SAM-LLaVA (full)":
                scored.append((FULL_SAM_ONLY, "sam"))
            for row_name, pixel_map in scored:
                method = CascadeMethod(coarse, trained_sam[sam_key], score="map_max", embed=embed, pixel_map=pixel_map)
                res = evaluate(method, data, shots=1, seeds=tuple(seeds), image_size=size, progress=False)
                st = seed_stats(res)
                rows.append({"variant": row_name, "image_auroc": st["image_auroc"], "pixel_auroc": st["pixel_auroc"],
                             **_paper(row_name)})
                if runs is not None:
                    runs.add_results(name, res, seeds, training_seed=train_seed, scored_on=pixel_map)
        tables.append(pd.DataFrame(rows))
    table = pool_training_seeds(tables)
    acc = {name: _accuracies(profile, name, data, per_label, answer_training_seeds(profile, train_seeds),
                             coarse.device, runs) for name in accuracy_variants_for(profile, accuracy_variants)}
    at = table.columns.get_loc("pixel_auroc_std") + 1
    table.insert(at, "accuracy", [acc.get(v, (np.nan, np.nan))[0] for v in table["variant"]])
    table.insert(at + 1, "accuracy_std", [acc.get(v, (np.nan, np.nan))[1] for v in table["variant"]])
    return table


def _paper(name: str) -> dict[str, float]:
    """The paper's six numbers of a variant (NaN for a row that is not the paper's)."""
    p = PAPER.get(name, (np.nan,) * 6)
    cols = ("paper MVTec image", "paper MVTec pixel", "paper MVTec acc", "paper VisA image", "paper VisA pixel",
            "paper VisA acc")
    return dict(zip(cols, p))


def _accuracies(profile: Profile, name: str, data: dict[str, CategoryData], per_label: int | None, seeds,
                device: torch.device, runs: RunLog | None) -> tuple[float, float]:
    """(mean, std) over training ``seeds`` of the yes/no accuracy of variant ``name`` trained end to end (cached,
    keyed by the variant's profile: the full variant is the main model), support seed 0; each category's goes to
    ``runs``."""
    per_seed = []
    for s in seeds:
        model, _ = trained_model(with_training_seed(profile, s).replace(**ABLATIONS[name]), progress=False,
                                 device=device)
        per_category = description_eval(model, data, shots=1, max_new_tokens=3, per_label=per_label)[0]
        per_seed.append(float(per_category["accuracy"].mean()))
        for r in per_category.itertuples() if runs is not None else ():
            runs.add(name, "accuracy", r.accuracy, training_seed=s, support_seed=0, unit=r.category, scored_on="answer")
    return mean_std(per_seed)
