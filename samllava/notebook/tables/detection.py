"""Detection notebooks: segmentation and few-shot tables, Tables 1-4, Figs. 2 and 5 (the SAM side they
train is cached in :mod:`.trained`)."""
from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from samllava import metrics
from samllava.report import figures as viz
from samllava.coarse import TextCache, category_phrase, otsu_masks
from samllava.coarse.backbone import CachedExtractor
from samllava.core.config import Profile
from samllava.data import FEWSHOT_SEEDS, CategoryData, sample_support, support_images
from samllava.core.device import module_device
from samllava.evaluate.harness import CascadeMethod, CoarseMethod, KnnMethod, evaluate
from samllava.report import runs as R
from samllava.report.paper_values import FIGURE2_MEAN, MEAN_ROW, PAPER_MEAN_ROW, TABLE1, TABLES2_4
from samllava.report.runs import RunLog
from samllava.notebook.tables.data import cross_domain_sets
from samllava.notebook.tables.trained import cascade_inputs, train_cascade
from samllava.notebook.tables.training_seeds import TRAINING_SEEDS, pool_training_seeds, with_training_seed


def fewshot_benchmark(profile: Profile, datasets: dict[str, dict[str, CategoryData]], shots=(1, 2, 4),
                      seeds=FEWSHOT_SEEDS, image_size: int | None = None, progress: bool = False,
                      device: str | torch.device | None = None) -> pd.DataFrame:
    """Calibrated coarse map (Eq. 2) beside a PatchCore-style k-NN on the same backbone, on ``device``.

    One row per (data set, method, K): mean over categories of the per-seed-mean image AUROC (and
    pixel AUROC where masks exist), with the std over seeds of the category-mean.
    """
    size = image_size or profile.data.image_size
    coarse = CoarseMethod(profile, device=device)
    # one backbone pass per query batch for all seeds, shot counts and both methods
    cached = CachedExtractor(coarse.coarse.calibrator.extractor)
    coarse.coarse.calibrator.extractor = cached
    knn = KnnMethod(profile, extractor=cached)  # the very same backbone
    rows = []
    for ds_name, data in datasets.items():
        for k in shots:
            for name, method in (("SAM-LLaVA coarse (calibrated, Eq. 2)", coarse), ("PatchCore-style k-NN", knn)):
                res = evaluate(method, data, shots=k, seeds=tuple(seeds), image_size=size, progress=progress)
                rows.append({"data": ds_name, "method": name, "K": k, **seed_stats(res)})
    return pd.DataFrame(rows)


def seed_stats(res) -> dict[str, float]:
    """Mean over categories per seed, then mean and std over seeds (percent)."""
    out = {}
    for metric in ("image_auroc", "pixel_auroc"):
        per_seed = np.array([[r[metric] for r in c.per_seed] for c in res.values()])  # (categories, seeds)
        if np.isnan(per_seed).all():
            out[metric], out[f"{metric}_std"] = float("nan"), float("nan")
            continue
        m, s = metrics.mean_std(100 * per_seed.mean(0))
        out[metric], out[f"{metric}_std"] = m, s
    return out


@torch.no_grad()
def coarse_figure(coarse, data: dict[str, CategoryData], n: int = 4, shots: int = 1, seed: int = 0, size: int = 256):
    """Figure: per row one anomalous image: image, ground truth, zero-shot H, few-shot H' and both Otsu masks."""
    cache = TextCache(coarse.zero_shot)
    rows, titles = [], []
    for j, (name, cat) in enumerate(list(data.items())[:n]):
        anomalous = [s for s in cat.test if s.label == 1]
        s = anomalous[(2 * j) % len(anomalous)]
        img = cat.load_images([s], size)
        gt = cat.load_masks([s], size)[0, 0] if cat.has_masks else None
        feats = cache.get(category_phrase(name, allow_generic=True))
        coarse.clear_support()
        zs = coarse(img, feats)
        coarse.set_support(cat.load_images(sample_support(cat, shots, seed), size))  # the figure: support alone
        fs = coarse(img, feats if coarse.zero_shot_active() else None)
        rows.append([img[0], gt, zs.calibrated[0], zs.mask[0], fs.calibrated[0], fs.mask[0]])
        titles.append(f"{name}\n{s.defect_type}")
    coarse.clear_support()
    fig = viz.image_grid(
        rows,
        row_titles=titles,
        col_titles=[
            "image",
            "ground truth",
            "zero-shot H (Eq. 1)",
            "M_coarse (Otsu)",
            f"few-shot H' (Eq. 2, K={shots})",
            "M'_coarse (Otsu)",
        ],
    )
    return fig, fs.terms


# --- stage 2: the cascade ------------------------------------------------------------------------

def mask_ious(pred: torch.Tensor, gt: torch.Tensor) -> np.ndarray:
    """(N,) IoU of each image's predicted mask with its ground truth, NaN where the image has no defect;
    (N, H, W) bool/0-1 tensors."""
    pred, gt = pred.bool(), gt.bool()
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    iou = (inter / union.clamp(min=1)).numpy().astype(float)
    iou[~gt.flatten(1).any(1).numpy()] = np.nan
    return iou


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Mean IoU over images that have a ground-truth defect; (N, H, W) bool/0-1 tensors."""
    pred, gt = pred.bool(), gt.bool()
    keep = gt.flatten(1).any(1)
    inter = (pred & gt)[keep].flatten(1).sum(1).float()
    union = (pred | gt)[keep].flatten(1).sum(1).float()
    return float((inter / union.clamp(min=1)).mean()) if keep.any() else float("nan")


def segmentation_table(coarse, cascades, data: dict[str, CategoryData], shots: int = 1, seeds=(0,),
                       size: int | None = None, runs: RunLog | None = None, train_seeds=None) -> pd.DataFrame:
    """Coarse only vs coarse + SAM: image/pixel AUROC, AUPRO and mask IoU (mean over categories and support
    ``seeds``), for each SAM side of ``cascades`` (one per training seed), pooled over them
    (:func:`~samllava.notebook.tables.training_seeds.pool_training_seeds`: mean and ``_std`` columns); the coarse
    row does not depend on training and is measured once.

    ``runs``: gets the pixel AUROC per support seed and category, and the mask IoU per defective image (support
    seed ``seeds[0]``), of the coarse stage (no training seed) and of each cascade (its seed of ``train_seeds``,
    default 0, 1, ...)."""
    size = size or coarse.profile.data.image_size
    train_seeds = list(range(len(cascades))) if train_seeds is None else list(train_seeds)
    if len(train_seeds) != len(cascades):
        raise ValueError(f"{len(cascades)} cascades but training seeds {train_seeds}")
    units = [f"{name}/{j}" for name, cat in data.items() for j in range(len(cat.test))]  # cascade_inputs' order

    def row(name: str, method, arm: str, training_seed: int | None) -> dict:
        res = evaluate(method, data, shots=shots, seeds=tuple(seeds), image_size=size, progress=False)
        r = {"method": name, **{k: v for k, v in seed_stats(res).items() if not k.endswith("_std")}}
        r["aupro"] = 100 * float(np.mean([c.summary()["aupro"] for c in res.values()]))
        if runs is not None:
            runs.add_results(arm, res, seeds, ("pixel_auroc",), training_seed=training_seed)
        return r

    def log_ious(arm: str, masks: torch.Tensor, gt: torch.Tensor, training_seed: int | None) -> None:
        for unit, iou in zip(units, mask_ious(masks, gt)) if runs is not None else ():
            if not np.isnan(iou):
                runs.add(arm, "mask_iou", 100 * iou, training_seed=training_seed, support_seed=seeds[0], unit=unit)

    base = row("coarse only (Eq. 1-2)", coarse, R.COARSE, None)
    tables = []
    for k, (cascade, train_seed) in enumerate(zip(cascades, train_seeds)):
        emb, cmask, gt = cascade_inputs(coarse, cascade, data, shots=shots, seed=seeds[0], size=size)
        dev = module_device(cascade)
        with torch.no_grad():
            fine = torch.cat([cascade(emb[i:i + 16].to(dev), cmask[i:i + 16].to(dev), size).mask.cpu()
                              for i in range(0, len(emb), 16)])
        ours = row("coarse + SAM cascade (Eq. 3-4)", CascadeMethod(coarse, cascade), R.CASCADE, train_seed)
        ours["mask_iou"] = 100 * mask_iou(fine, gt)
        if k == 0:  # the coarse mask does not depend on the SAM side
            log_ious(R.COARSE, cmask, gt, None)
        log_ious(R.CASCADE, fine, gt, train_seed)
        tables.append(pd.DataFrame([{**base, "mask_iou": 100 * mask_iou(cmask, gt)}, ours]))
    return pool_training_seeds(tables)


@torch.no_grad()
def cascade_figure(coarse, cascade, data: dict[str, CategoryData], n: int = 3, shots: int = 1, seed: int = 0,
                   size: int | None = None):
    """Figure: image, ground truth, H', M_coarse, the candidate masks with predicted IoU, M_fine."""
    size = size or coarse.profile.data.image_size
    rows, titles = [], []
    for j, (name, cat) in enumerate(list(data.items())[:n]):
        s = [s for s in cat.test if s.label == 1][j % 3]
        img = cat.load_images([s], size)
        coarse(img, name, *support_images(cat, shots, seed, size, coarse.profile.fewshot))
        out = coarse.last_output
        fine = cascade(cascade.embed(img), out.mask, size)
        cands = fine.branch_logits["mid"][0]  # (Nm, 4h, 4w) in SAM's frame
        iou = fine.iou[0].tolist()
        row = [img[0], cat.load_masks([s], size)[0, 0], out.calibrated[0], out.mask[0]]
        row += [c > 0 for c in cands] + [fine.mask[0]]
        rows.append(row)
        titles.append(f"{name}\n" + " ".join(f"{v:.2f}" for v in iou))
    n_c = len(rows[0]) - 5
    cols = ["image", "ground truth", "H'", "M_coarse"] + [f"candidate {k}" for k in range(n_c)] + ["M_fine (best IoU)"]
    return viz.image_grid(rows, row_titles=titles, col_titles=cols)


@torch.no_grad()
def prompt_types_figure(
    coarse,
    cascade,
    data: dict[str, CategoryData],
    prompts=("mask", "mask+box", "box", "point", "none"),
    n: int = 3,
    shots: int = 1,
    seed: int = 0,
    size: int | None = None,
):
    """Figure: the fine mask of each prompt type (Tables 7 and 10) from the same SAM weights."""
    size = size or coarse.profile.data.image_size
    variants = {p: cascade.with_prompt(p).eval() for p in prompts}  # the same trained weights
    rows, titles = [], []
    for j, (name, cat) in enumerate(list(data.items())[:n]):
        s = [s for s in cat.test if s.label == 1][j % 3]
        img = cat.load_images([s], size)
        coarse(img, name, *support_images(cat, shots, seed, size, coarse.profile.fewshot))
        emb, cmask = cascade.embed(img), coarse.last_output.mask
        rows.append(
            [img[0], cat.load_masks([s], size)[0, 0], cmask[0]]
            + [variants[p](emb, cmask, size).mask[0] for p in prompts]
        )
        titles.append(name)
    return viz.image_grid(rows, row_titles=titles, col_titles=["image", "ground truth", "M_coarse", *prompts])


def zero_shot_table(
    profile: Profile, data_roots: dict | None = None, steps: int = 200, lr: float | None = None,
    device: str | torch.device | None = None, train_seeds=TRAINING_SEEDS, runs: RunLog | None = None,
) -> pd.DataFrame:
    """Table 1: train on one data set, test zero-shot on the other, both directions.

    Measured in one harness: the WinCLIP-style zero-shot CLIP map (the coarse stage without
    support, measured once) and SAM-LLaVA's coarse + SAM cascade (SAM side trained on the source data
    set, once per training seed of ``train_seeds``; mean and ``_std`` columns over them).
    Columns follow the paper: VisA -> MVTec-AD first, then MVTec-AD -> VisA. ``runs``: gets both AUROCs per
    direction, category and training seed.
    """
    sets = cross_domain_sets(profile, data_roots)
    (name_a, (train_a, test_a)), (name_b, (train_b, test_b)) = sets.items()
    coarse = CoarseMethod(profile, device=device)
    size = profile.data.image_size
    zero_shot, ours = "WinCLIP-style zero-shot map (this harness)", "SAM-LLaVA coarse + SAM (this run)"
    columns, base, per_seed = [], [], {s: [] for s in train_seeds}
    for src_name, train_data, dst_name, test_data in (
        (name_b, train_b, name_a, test_a),
        (name_a, train_a, name_b, test_b),
    ):
        columns += [f"{src_name} -> {dst_name}: image AUROC", f"{src_name} -> {dst_name}: pixel AUROC"]
        direction = f"{src_name} -> {dst_name}"
        res = evaluate(coarse, test_data, shots=0, image_size=size, progress=False)
        st = seed_stats(res)
        base += [st["image_auroc"], st["pixel_auroc"]]
        if runs is not None:
            runs.add_results(R.ZERO_SHOT, res, (None,), direction=direction)
        for seed in train_seeds:
            _, cascade, _ = train_cascade(with_training_seed(profile, seed), steps=steps, lr=lr, shots=0,
                                          data=train_data, coarse=coarse, progress=False)
            res = evaluate(CascadeMethod(coarse, cascade), test_data, shots=0, image_size=size, progress=False)
            st = seed_stats(res)
            per_seed[seed] += [st["image_auroc"], st["pixel_auroc"]]
            if runs is not None:
                runs.add_results(R.OURS, res, (None,), training_seed=seed, direction=direction)
    paper = [[f"{m} (paper)", *TABLE1[m]] for m in ("WinCLIP", "SPGDD-GPT", "SAM-LLaVA")]
    return pool_training_seeds([pd.DataFrame([[zero_shot, *base], [ours, *vals], *paper], columns=["method", *columns])
                                for vals in per_seed.values()])


def table1_note(profile: Profile, steps: int, lr: float, real_data: bool) -> str:
    """What Table 1 measures and what to expect of it, for the table's note."""
    zs = ("CLIP has pretrained weights, so the zero-shot map is informative" if profile.clip.weights else
          "CLIP has random weights in this profile, so the zero-shot map carries no learned notion of a defect: "
          "its AUROC reflects only simple image statistics of this data (chance is 50; values far from 50 either "
          "way say nothing about the method)")
    data = "MVTec-AD and VisA" if real_data else "synthetic stand-ins (textures for MVTec-AD, objects for VisA)"
    return (f"zero-shot: trained on one data set, tested on the other ({data}); {zs}. The SAM-LLaVA row's "
            "image AUROC equals the zero-shot map's by construction: its image score is the coarse stage's, SAM "
            f"changes only the pixel map (its SAM side trained {steps} steps at lr {lr} on the source). "
            "Rows marked (paper) are the paper's numbers, on the real data sets; the others are this run's")


def fewshot_pixel_tables(profile: Profile, coarse: CoarseMethod, cascades, data: dict[str, CategoryData],
                         shots=(1, 2, 4), seeds=FEWSHOT_SEEDS, runs: RunLog | None = None,
                         train_seeds=None) -> dict[int, pd.DataFrame]:
    """Tables 2-4: pixel AUROC per TADD (stand-in) subset, mean over support ``seeds``, for each K; methods
    in one harness (SAM-LLaVA, coarse only, PatchCore-style k-NN, WinCLIP-style zero-shot) beside the
    paper's SAM-LLaVA, PatchCore and WinCLIP columns. SAM-LLaVA's column is measured with each SAM side of
    ``cascades`` (one per training seed) and pooled over them (mean and ``_std`` columns); the methods
    that do not train are measured once. ``runs``: gets every method's pixel AUROC per K, support seed and
    subset, SAM-LLaVA's per training seed of ``train_seeds`` (default 0, 1, ...) too."""
    size = profile.data.image_size
    if not isinstance(coarse.coarse.calibrator.extractor, CachedExtractor):
        coarse.coarse.calibrator.extractor = CachedExtractor(coarse.coarse.calibrator.extractor)
    ours = "SAM-LLaVA (this run)"
    methods = {"coarse only (this run)": coarse,
               "PatchCore-style k-NN (this run)": KnnMethod(profile, extractor=coarse.coarse.calibrator.extractor)}
    arms = {"coarse only (this run)": R.COARSE, "PatchCore-style k-NN (this run)": R.KNN}
    train_seeds = list(range(len(cascades))) if train_seeds is None else list(train_seeds)
    zero_res = evaluate(coarse, data, shots=0, image_size=size, progress=False)
    zero = {name: r.summary()["pixel_auroc"] for name, r in zero_res.items()}

    def pixel(method, k: int, arm: str, training_seed: int | None = None) -> dict[str, float]:
        res = evaluate(method, data, shots=k, seeds=tuple(seeds), image_size=size, progress=False)
        if runs is not None:
            runs.add_results(arm, res, seeds, ("pixel_auroc",), training_seed=training_seed, K=k)
        return {subset: 100 * r.summary()["pixel_auroc"] for subset, r in res.items()}

    tables = {}
    for k in shots:
        fixed = {name: pixel(m, k, arms[name]) for name, m in methods.items()}
        if runs is not None:
            runs.add_results(R.ZERO_SHOT, zero_res, (None,), ("pixel_auroc",), K=k)
        per_seed = []
        for cascade, train_seed in zip(cascades, train_seeds):
            cols = {ours: pixel(CascadeMethod(coarse, cascade), k, R.OURS, train_seed), **fixed}
            rows = []
            for subset in data:
                row = {"subset": subset, **{name: col[subset] for name, col in cols.items()}}
                row["WinCLIP-style zero-shot (this harness)"] = 100 * zero[subset]
                paper = TABLES2_4.get(subset, {})
                for m in ("SAM-LLaVA", "PatchCore", "WinCLIP"):
                    row[f"{m} (paper)"] = paper.get(m, (np.nan,) * 3)[(1, 2, 4).index(k)]
                rows.append(row)
            per_seed.append(with_mean_rows(pd.DataFrame(rows), k))
        tables[k] = pool_training_seeds(per_seed)
    return tables




def with_mean_rows(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """``df`` (one row per subset) with two rows added: this run's mean over its subsets, with the paper
    cells left empty (the paper reports no mean over these subsets), and the paper's own 21-subset mean
    (Fig. 2) in the paper columns that have one, this run's cells empty."""
    ours = [c for c in df.columns if c != "subset" and "(paper)" not in c]
    mean = {"subset": MEAN_ROW, **{c: df[c].mean() for c in ours}}
    paper = {"subset": PAPER_MEAN_ROW}
    for c in df.columns:
        m = c.removesuffix(" (paper)")
        if c.endswith("(paper)") and m in FIGURE2_MEAN:
            paper[c] = FIGURE2_MEAN[m][(1, 2, 4).index(k)]
    return pd.concat([df, pd.DataFrame([mean, paper])], ignore_index=True)


def figure2(tables: dict[int, pd.DataFrame], label: str = ""):
    """Figure 2: mean pixel AUROC per method for each K (this run's methods, and the paper's means).

    ``label`` (e.g. "offline profile, TADD stand-in (synthetic)") is printed in the title, with the
    warning that the two kinds of bars are not comparable."""
    ks = sorted(tables)
    ours = [c for c in tables[ks[0]].columns if c.endswith("(this run)") or c.endswith("(this harness)")]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / (len(ours) + len(FIGURE2_MEAN))
    for i, col in enumerate(ours):
        means = [tables[k].set_index("subset").loc[MEAN_ROW, col] for k in ks]
        ax.bar(np.arange(len(ks)) + i * width, means, width, label=col)
    for j, (m, vals) in enumerate(FIGURE2_MEAN.items()):
        ax.bar(
            np.arange(len(ks)) + (len(ours) + j) * width,
            vals,
            width,
            label=f"{m} (paper, 21 TADD subsets)",
            hatch="//",
            alpha=0.6,
        )
    ax.set_xticks(np.arange(len(ks)) + 0.4 - width / 2, [f"{k}-shot" for k in ks])
    ax.set_ylabel("mean pixel AUROC (%)")
    ax.set_ylim(40, 100)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{label + ': ' if label else ''}this run on stand-in subsets (plain) vs the paper on TADD "
                 "(hatched): not comparable with the paper", fontsize=8)
    fig.tight_layout()
    return fig


@torch.no_grad()
def segmentation_comparison_figure(profile: Profile, coarse: CoarseMethod, cascade, data: dict[str, CategoryData],
                                   n: int = 4, shots: int = 1, seed: int = 0, data_label: str = "synthetic"):
    """Figure 5: input, ground truth, the masks of the compared methods (Otsu of each map), SAM-LLaVA's
    fine mask, and the coarse heatmap; the title names the profile and ``data_label``."""
    size = profile.data.image_size
    knn = KnnMethod(profile, extractor=coarse.coarse.calibrator.extractor)
    rows, titles = [], []
    for j, (name, cat) in enumerate(list(data.items())[:n]):
        s = [s for s in cat.test if s.label == 1][j % 3]
        img = cat.load_images([s], size)
        support, calibration = support_images(cat, shots, seed, size, coarse.profile.fewshot)
        zs_map, _ = coarse(img, name, None)
        zs_mask = coarse.last_output.mask
        knn_map, _ = knn(img, name, support)
        coarse(img, name, support, calibration)
        out = coarse.last_output
        fine = cascade(cascade.embed(img), out.mask, size)
        rows.append(
            [
                img[0],
                cat.load_masks([s], size)[0, 0],
                zs_mask[0],
                otsu_masks(knn_map)[0],
                out.mask[0],
                fine.mask[0],
                out.calibrated[0],
            ]
        )
        titles.append(name)
    cols = ["input", "ground truth", "WinCLIP-style (zero-shot)", "PatchCore-style k-NN", "coarse only (M'_coarse)",
            "SAM-LLaVA (M_fine)", "coarse heatmap H'"]
    fig = viz.image_grid(rows, row_titles=titles, col_titles=cols)
    fig.suptitle(f"{profile.name} profile, {data_label}, {viz.weights_phrase(profile)}: "
                 "not comparable with the paper's Fig. 5", fontsize=9)
    fig.tight_layout()
    return fig
