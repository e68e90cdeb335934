"""The values a pooled table averages, one per run and unit: ``results/<table>_runs.csv``.

A table states means and stds over training seeds, support seeds and categories; a claim about a difference
between two of its rows needs the values behind them, paired over the same images and seeds
(:mod:`samllava.report.claims`). Each table builder that pools appends them to a :class:`RunLog` in one long
layout, one row per value:

``arm`` (a method, a variant, "before training": the constants below), the builder's own labels (``K``,
``direction``, ...), ``metric``, ``training_seed``, ``support_seed``, ``unit`` (a category, a subset or one
image) and ``value``.

A seed a value does not depend on is left empty (a method that does not train has no training seed): a
pairing then uses that value against every seed of the other arm (:func:`paired_values`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

KEYS = ("training_seed", "support_seed", "unit")  # what two arms are paired over
SEEDS = ("training_seed", "support_seed")

# Arms the builders log and the claims read (an ablation's arm is its variant's name, paper_values.ABLATIONS).
OURS = "SAM-LLaVA"  # the method measured in this run (coarse + SAM, or the whole model)
ZERO_SHOT = "zero-shot map"  # the coarse stage without support (Eq. 1): the WinCLIP-style baseline
KNN = "k-NN"  # the PatchCore-style k-NN on the few-shot backbone
COARSE = "coarse only"  # the calibrated coarse map (Eq. 1-2) and its Otsu mask
CASCADE = "coarse + SAM"  # the coarse stage and the SAM cascade (Eq. 3-4)
BEFORE, AFTER = "before training", "after training"


class RunLog:
    """Values appended one at a time, read back as one table (:meth:`frame`)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, arm: str, metric: str, value: float, *, training_seed: int | None = None,
            support_seed: int | None = None, unit: str = "all", **labels: Any) -> None:
        """One value: ``arm`` measured ``metric`` = ``value`` on ``unit`` with these seeds; ``labels`` are
        the builder's own columns (e.g. ``K=4``)."""
        self.rows.append({"arm": str(arm), **labels, "metric": str(metric), "training_seed": training_seed,
                          "support_seed": support_seed, "unit": str(unit), "value": float(value)})

    def add_results(self, arm: str, res: dict, seeds, names=("image_auroc", "pixel_auroc"),
                    training_seed: int | None = None, **labels: Any) -> None:
        """``res`` (:func:`samllava.evaluate.harness.evaluate`'s ``{category: result}``): per category and support
        seed of ``seeds`` (in the order evaluate ran them; ``(None,)`` for a zero-shot result, which has no
        support) each metric of ``names``, in percent."""
        for category, r in res.items():
            for seed, values in zip(seeds, r.per_seed):
                for m in names:
                    self.add(arm, m, 100 * values[m], training_seed=training_seed, support_seed=seed, unit=category,
                             **labels)

    def frame(self) -> pd.DataFrame:
        """One row per value; columns ``arm``, the labels in order of first use, ``metric``, the :data:`KEYS` and
        ``value``; seeds as nullable integers (an empty cell where a value does not depend on the seed)."""
        labels = list(dict.fromkeys(k for r in self.rows for k in r if k not in ("arm", "metric", "value", *KEYS)))
        cols = ["arm", *labels, "metric", *KEYS, "value"]
        df = pd.DataFrame(self.rows, columns=cols)
        for seed in SEEDS:
            df[seed] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                                 for v in df[seed]], dtype="Int64")
        return df


def key_text(v: Any) -> str:
    """A key cell as text, the same whether it was written as 1, 1.0 or "1" (CSV reads an integer column with
    an empty cell as floats); an empty cell is ""."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def select(runs: pd.DataFrame, where: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``runs`` whose columns equal ``where``'s values (compared as :func:`key_text`); none when a
    column is missing."""
    keep = pd.Series(True, index=runs.index)
    for col, value in where.items():
        if col not in runs.columns:
            return runs.iloc[0:0]
        keep &= runs[col].map(key_text) == key_text(value)
    return runs[keep]


def paired_values(runs: pd.DataFrame, a: dict[str, Any], b: dict[str, Any]) -> np.ndarray:
    """``(n,)`` differences ``a - b`` of the values the two selections measured on the same key, NaN pairs dropped.

    The key is every column but ``value`` and the selected ones; a key column empty on every row of one side
    (a seed that side does not depend on) is left out of the key, so that side's value meets each of the
    other side's.
    """
    left, right = select(runs, a), select(runs, b)
    if left.empty or right.empty:
        return np.array([])
    on = [c for c in runs.columns if c != "value" and c not in a and c not in b]
    on = [c for c in on if (left[c].map(key_text) != "").any() and (right[c].map(key_text) != "").any()]
    keyed = [df.assign(**{c: df[c].map(key_text) for c in on})[[*on, "value"]] for df in (left, right)]
    if not on:  # one value each (or a constant): a single pair
        merged = pd.DataFrame({f"value_{k}": df["value"].to_numpy()[:1] for k, df in zip("ab", keyed)})
    else:
        merged = keyed[0].merge(keyed[1], on=on, suffixes=("_a", "_b"))
    d = (merged["value_a"] - merged["value_b"]).to_numpy(dtype=float)
    return d[~np.isnan(d)]


def level_values(runs: pd.DataFrame, where: dict[str, Any]) -> np.ndarray:
    """``(n,)`` values of one selection, NaN dropped."""
    v = select(runs, where)["value"].to_numpy(dtype=float) if "value" in runs.columns else np.array([])
    return v[~np.isnan(v)]
