"""Training seeds: the independent training runs behind every number that depends on training (issue #19).

Another CPU (other kernels, thread count, summation order) moves a training trajectory as far as another
seed does (docs/reproduction.md): one trained model per table would state a spread over support seeds
that a rerun elsewhere exceeds many times. So each table that depends on training is the cell-wise mean
over :data:`TRAINING_SEEDS` runs, each trained from its own initialisation and example order
(:func:`samllava.core.seeding.training_init_seed`), with the sample std beside every measured column
(``<column>_std``, which the reproduction check holds a rerun to). The frozen work (coarse maps, the
backbone's features, the verdict) does not depend on the seed and is shared by the runs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from pandas.api.types import is_float_dtype

from samllava.core.config import Profile
from samllava.metrics import mean_std

TRAINING_SEEDS = (0, 1, 2)

# Rows typed in from the paper carry no spread of ours ("SAM-LLaVA (paper)", "(paper; GPT-4V)", ...).
PAPER_ROW = "(paper"


def with_training_seed(profile: Profile, seed: int) -> Profile:
    """``profile`` whose training run is ``seed`` (``train.seed``: the trained parts' initialisation and
    the order of the examples); every cache keyed by the profile then holds one model per seed."""
    return profile.replace(**{"train.seed": int(seed)})


def answer_training_seeds(profile: Profile, seeds: Sequence[int]) -> tuple[int, ...]:
    """The training seeds a yes/no accuracy is measured over: all of ``seeds`` where the language model
    answers by itself, the first alone where the answer's yes/no is the calibrated verdict's
    (``llm.answer_from_verdict``): no training touches that verdict, so more trained models would measure
    the same number again (the committed run's were bit-identical across kernels, docs/reproduction.md)."""
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("answer_training_seeds needs at least one training seed")
    return seeds[:1] if profile.llm.answer_from_verdict else seeds


def pool_training_seeds(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Cell-wise mean over training runs of tables of one layout; each measured column is followed by
    ``<column>_std``, the sample std over the runs (NaN for one run).

    The first column (the row labels), the paper's columns (a header with "paper") and integer columns
    (counts) must be the same in every run and are kept as they are; rows typed in from the paper (a
    label with "(paper") get no std. A cell measured in some runs and NaN in others is an error
    (:func:`samllava.metrics.mean_std`): a failed run must not shrink the mean.

    Args:
        tables: one table per training seed, same columns and rows in the same order.
    """
    if not tables:
        raise ValueError("pool_training_seeds needs at least one table")
    first = tables[0]
    label = first.columns[0]
    for i, t in enumerate(tables[1:], 1):
        if list(t.columns) != list(first.columns) or not t[label].equals(first[label]):
            raise ValueError(f"training run {i}: its table has other columns or rows than run 0's "
                             f"({list(t.columns)} vs {list(first.columns)})")
    paper_rows = first[label].astype(str).str.contains(PAPER_ROW, regex=False).to_numpy()
    out: dict[str, pd.Series | np.ndarray] = {}
    for col in first.columns:
        values = np.stack([t[col].to_numpy() for t in tables])  # (runs, rows)
        if col == label or "paper" in str(col).lower() or not is_float_dtype(first[col]):
            if any(not t[col].equals(first[col]) for t in tables[1:]):
                raise ValueError(f"column {col!r} is not measured, yet differs between training runs")
            out[col] = first[col].to_numpy()
            continue
        # a cell every run measured alike is kept exactly (a float mean of equal values may not return it)
        stats = [(float(values[0, r]), 0.0) if len(tables) > 1 and (values[:, r] == values[0, r]).all()
                 else mean_std(values[:, r]) for r in range(values.shape[1])]
        out[col] = np.array([m for m, _ in stats])
        out[f"{col}_std"] = np.where(paper_rows, np.nan, [s for _, s in stats])
    return pd.DataFrame(out)


def training_seeds_note(seeds: Sequence[int]) -> str:
    """What the ± of a pooled table covers, for its note."""
    return (f"mean over training seeds {list(seeds)} (each run trained from its own initialisation and example "
            f"order); the _std columns: their sample std")
