"""Data sets of a profile for the notebooks: the synthetic splits, the TADD stand-in, the packaged textiles,
a summary table, a gallery, Table 1's cross-domain sets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samllava.report import figures as viz
from samllava.core.config import Profile
from samllava.data import (
    TADD_STANDIN_SUBSETS, CategoryData, Sample, generate_realtex, generate_synthetic, load_dataset, load_mvtec,
    load_visa,
)
from samllava.core.paths import data_dir
from samllava.data.synthetic import ensure_synthetic

EVAL_SEED, TRAIN_SEED, TADD_SEED = 0, 1, 2  # synthetic data: held-out evaluation set, training set, TADD stand-in
# The real-texture set (samllava.data.realtex): rules and constants are chosen on "dev", reported on "heldout".
REALTEX_SEEDS = {"dev": 100, "heldout": 200}
REALTEX_SIZES = {"n_train": 16, "n_test": 40}


def synthetic(profile: Profile, split: str = "eval") -> dict[str, CategoryData]:
    """The profile's synthetic data: ``"eval"`` (seed 0, held out) or ``"train"`` (seed 1)."""
    seeds = {"eval": EVAL_SEED, "train": TRAIN_SEED}
    if split not in seeds:
        raise ValueError(f"split must be one of {sorted(seeds)}, got {split!r}")
    return load_dataset(ensure_synthetic(profile, seed=seeds[split]))


def realtex(profile: Profile, split: str = "heldout") -> dict[str, CategoryData]:
    """The real-texture set (real photographs, subtle painted defects): ``"dev"`` (seed 100), where the
    verdict's rule was chosen, or ``"heldout"`` (seed 200: other crops, other defects), where it is reported."""
    if split not in REALTEX_SEEDS:
        raise ValueError(f"split must be one of {sorted(REALTEX_SEEDS)}, got {split!r}")
    seed = REALTEX_SEEDS[split]
    root = data_dir() / f"realtex_s{profile.data.image_size}_seed{seed}"
    generate_realtex(root, size=profile.data.image_size, seed=seed, **REALTEX_SIZES)
    return load_dataset(root)


def tadd_standin(profile: Profile) -> dict[str, CategoryData]:
    """The labelled stand-in for the paper's TADD subsets: ``{subset name: CategoryData}``."""
    size, n = profile.data.image_size, profile.data.synthetic_images
    root = data_dir() / f"tadd_standin_s{size}_n{n}_seed{TADD_SEED}"
    if not (root / ".complete").exists():
        generate_synthetic(root, categories=list(TADD_STANDIN_SUBSETS.values()), n_train=profile.data.synthetic_train,
                           n_test=n, size=size, seed=TADD_SEED, overwrite=True)
        (root / ".complete").write_text("ok\n")
    data = load_dataset(root)
    by_folder = {c.name: subset for subset, c in TADD_STANDIN_SUBSETS.items()}
    return {by_folder[name]: cat for name, cat in data.items()}


def textiles(n_train: int = 8, n_test_per_kind: int = 20) -> dict[str, CategoryData]:
    """The packaged simulated textile images (``conformal-clip-data``, 250x250, image labels only).

    Deterministic split by sorted file name: the first ``n_train`` nominal images are the
    train/good pool for support sets; the test set is the next ``2 * n_test_per_kind`` nominal
    images plus the first ``n_test_per_kind`` local-defect and ``n_test_per_kind`` global-defect
    images. No masks: pixel metrics are not available.
    """
    from conformal_clip_data import global_dir, local_dir, nominal_dir  # optional data package: the textiles only

    def files(d) -> list[Path]:
        return sorted(Path(d()).glob("*.jpg"))

    nominal = files(nominal_dir)
    if len(nominal) < n_train + 2 * n_test_per_kind:
        raise ValueError(
            f"conformal-clip-data has {len(nominal)} nominal images, fewer than {n_train + 2 * n_test_per_kind} needed"
        )
    train = [Sample(p, "textile", "train", 0, "good", None) for p in nominal[:n_train]]
    test = [Sample(p, "textile", "test", 0, "good", None) for p in nominal[n_train:n_train + 2 * n_test_per_kind]]
    for kind, d in (("local", local_dir), ("global", global_dir)):
        test += [Sample(p, "textile", "test", 1, kind, None) for p in files(d)[:n_test_per_kind]]
    return {"textile": CategoryData("textile", Path(nominal_dir()).parent, train, test, has_masks=False)}


def dataset_summary(sets: dict[str, dict[str, CategoryData]]) -> pd.DataFrame:
    """One row per (data set, category): train/good, test normal, test anomalous, defect types, masks."""
    rows = []
    for ds, data in sets.items():
        for name, cat in data.items():
            defects = sorted({s.defect_type for s in cat.test if s.label == 1})
            rows.append(
                {
                    "data": ds,
                    "category": name,
                    "train_good": len(cat.train),
                    "test_normal": sum(s.label == 0 for s in cat.test),
                    "test_anomalous": sum(s.label == 1 for s in cat.test),
                    "defect_types": ", ".join(defects),
                    "masks": "yes" if cat.has_masks else "no (pixel metrics n/a)",
                }
            )
    return pd.DataFrame(rows)


def synthetic_gallery(data: dict[str, CategoryData], n: int = 6, size: int | None = None):
    """Figure: one anomalous image per category (image, mask, overlay) and the captions."""
    rows, titles, captions = [], [], []
    for j, (name, cat) in enumerate(list(data.items())[:n]):
        anomalous = [s for s in cat.test if s.label == 1]
        s = anomalous[(3 * j) % len(anomalous)]  # vary defect type and size across rows
        side = size or 256
        img = cat.load_images([s], side)[0]
        mask = cat.load_masks([s], side)[0, 0]
        rows.append([img, mask, viz.overlay(img, mask=mask)])
        titles.append(f"{name}\n{s.defect_type}")
        captions.append(f"{name}/{s.image_path.name}: {s.description}")
    fig = viz.image_grid(rows, row_titles=titles, col_titles=["image", "ground truth", "overlay"])
    return fig, captions


# --- paper artefacts -----------------------------------------------------------------------------

STANDIN_DOMAINS = {
    "textures": ("fabric", "wood_grain", "metal_plate", "concrete"),
    "objects": ("bottle_cap", "pill_tablet"),
}


def cross_domain_sets(profile: Profile, data_roots: dict | None = None) -> dict[str, tuple[dict, dict]]:
    """Table 1's two data sets as ``{name: (train data, test data)}``.

    Real MVTec-AD and VisA when both roots are given (a model trained on one data set's labelled
    test split is tested on the other's); else the synthetic stand-ins, textures and objects, trained
    on the synthetic training set (seed 1) and tested on the held-out set (seed 0).
    """
    roots = data_roots or {}
    if "mvtec" in roots and "visa" in roots:
        mvtec, visa = load_mvtec(roots["mvtec"]), load_visa(roots["visa"])
        return {"MVTec-AD": (mvtec, mvtec), "VisA": (visa, visa)}
    train, test = synthetic(profile, "train"), synthetic(profile, "eval")

    def pick(d, dom):
        return {k: d[k] for k in STANDIN_DOMAINS[dom]}

    return {"stand-in MVTec-AD (synthetic textures)": (pick(train, "textures"), pick(test, "textures")),
            "stand-in VisA (synthetic objects)": (pick(train, "objects"), pick(test, "objects"))}
