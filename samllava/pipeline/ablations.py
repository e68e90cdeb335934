"""Tables 7-10: the ablation variants as configuration changes, measured in one harness."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from ..answers import description_eval
from ..coarse.backbone import CachedExtractor
from ..config import Profile
from ..data import CategoryData
from ..evaluate import CascadeMethod, CoarseMethod, evaluate
from ..memo import ContentMemo
from ..paper_values import ABLATIONS as PAPER
from .data import synthetic
from .detection import seed_stats
from .trained import cascade_inputs, placed_cascade, train_cascade, trained_model

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


def ablation_table(profile: Profile, data: dict[str, CategoryData], steps: int = 150, lr: float | None = None,
                   seeds=(0,), accuracy_variants=(), per_label: int | None = None,
                   device: str | torch.device | None = None) -> pd.DataFrame:
    """Tables 7-10 in one table: image/pixel AUROC per variant (SAM side trained ``steps`` per variant,
    1-shot; image score = max of the combined map) and, for ``accuracy_variants``, the yes/no accuracy
    of the variant trained end to end with the profile's budget (the full variant is the main model
    of notebook 05, cached), on a balanced subset of ``per_label`` images per label and category."""
    # The variants differ only in SAM's prompting and decoder, so the frozen work is shared: the few-shot
    # backbone's features and SAM's image embeddings are computed once for all variants and seeds, and
    # the SAM-side training inputs (coarse masks, embeddings of the training set) once for all variants.
    coarse = CoarseMethod(profile, device=device)
    coarse.coarse.calibrator.extractor = CachedExtractor(coarse.coarse.calibrator.extractor)
    encoder = placed_cascade(profile, coarse.device)  # every variant's image encoder is this one (same config, seed)
    embed = ContentMemo(encoder.embed, max_batches=64)
    train_data = synthetic(profile, "train")
    train_inputs = lru_cache(maxsize=1)(lambda: cascade_inputs(coarse, encoder, train_data, shots=1))
    rows = []
    trained_sam = {}
    for name, changes in ABLATIONS.items():
        variant = profile.replace(**changes) if changes else profile
        sam_key = (variant.sam.prompt, variant.multiscale.prompt_learner, variant.multiscale.decoder)
        if sam_key not in trained_sam:  # "w/o SASA" shares the full model's SAM side
            cascade = train_cascade(variant, steps=steps, lr=lr, shots=1, coarse=coarse, data=train_data,
                                    progress=False, inputs=train_inputs)[1]
            cascade.sam.image_encoder = encoder.sam.image_encoder  # frozen and identical (test_pipeline): share it
            trained_sam[sam_key] = cascade
        method = CascadeMethod(coarse, trained_sam[sam_key], score="map_max", embed=embed)
        size = profile.data.image_size
        st = seed_stats(evaluate(method, data, shots=1, seeds=tuple(seeds), image_size=size, progress=False))
        acc = _accuracy(variant, data, per_label, coarse.device) if name in accuracy_variants else np.nan
        p = PAPER[name]
        rows.append({"variant": name, "image_auroc": st["image_auroc"], "pixel_auroc": st["pixel_auroc"],
                     "accuracy": acc, "paper MVTec image": p[0], "paper MVTec pixel": p[1], "paper MVTec acc": p[2],
                     "paper VisA image": p[3], "paper VisA pixel": p[4], "paper VisA acc": p[5]})
    return pd.DataFrame(rows)


def _accuracy(variant: Profile, data: dict[str, CategoryData], per_label: int | None, device: torch.device) -> float:
    """Yes/no accuracy of ``variant`` trained end to end (cached, keyed by the variant's profile: the full
    variant is the main model)."""
    model, _ = trained_model(variant, progress=False, device=device)
    return float(description_eval(model, data, shots=1, max_new_tokens=3, per_label=per_label)[0]["accuracy"].mean())
