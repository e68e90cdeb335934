"""What the notebooks call: data sets of a profile, the trained model, shared benchmarks.

Notebooks stay thin (a parameters cell, a few calls, a saved table or figure); everything they
compute lives here or in the stage modules, so it is tested like the rest of the library.
Costly results shared by several notebooks (the trained model) are cached under
:func:`samllava.paths.checkpoint_dir`, keyed by profile, and rebuilt when missing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import metrics
from .config import Profile
from .data import FEWSHOT_SEEDS, TADD_STANDIN_SUBSETS, CategoryData, Sample, generate_synthetic, load_dataset, sample_support
from .data.instructions import NO_POSITION, POSITIONS, parse_position
from .evaluate import CoarseMethod, KnnMethod, evaluate
from .paths import checkpoint_dir, data_dir, ensure_synthetic

EVAL_SEED, TRAIN_SEED, TADD_SEED = 0, 1, 2  # synthetic data: held-out evaluation set, training set, TADD stand-in


def synthetic(profile: Profile, split: str = "eval") -> dict[str, CategoryData]:
    """The profile's synthetic data: ``"eval"`` (seed 0, held out) or ``"train"`` (seed 1)."""
    seeds = {"eval": EVAL_SEED, "train": TRAIN_SEED}
    if split not in seeds:
        raise ValueError(f"split must be one of {sorted(seeds)}, got {split!r}")
    return load_dataset(ensure_synthetic(profile, seed=seeds[split]))


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
    from conformal_clip_data import global_dir, local_dir, nominal_dir

    def files(d) -> list[Path]:
        return sorted(Path(d()).glob("*.jpg"))

    nominal = files(nominal_dir)
    if len(nominal) < n_train + 2 * n_test_per_kind:
        raise ValueError(f"conformal-clip-data has {len(nominal)} nominal images, fewer than {n_train + 2 * n_test_per_kind} needed")
    train = [Sample(p, "textile", "train", 0, "good", None) for p in nominal[:n_train]]
    test = [Sample(p, "textile", "test", 0, "good", None) for p in nominal[n_train:n_train + 2 * n_test_per_kind]]
    for kind, d in (("local", local_dir), ("global", global_dir)):
        test += [Sample(p, "textile", "test", 1, kind, None) for p in files(d)[:n_test_per_kind]]
    return {"textile": CategoryData("textile", Path(nominal_dir()).parent, train, test, has_masks=False)}


def fewshot_benchmark(profile: Profile, datasets: dict[str, dict[str, CategoryData]], shots=(1, 2, 4),
                      seeds=FEWSHOT_SEEDS, image_size: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Calibrated coarse map (Eq. 2) beside a PatchCore-style k-NN on the same backbone.

    One row per (data set, method, K): mean over categories of the per-seed-mean image AUROC (and
    pixel AUROC where masks exist), with the std over seeds of the category-mean.
    """
    from .coarse.backbone import CachedExtractor

    size = image_size or profile.data.image_size
    coarse = CoarseMethod(profile)
    # one backbone pass per query batch for all seeds, shot counts and both methods
    cached = CachedExtractor(coarse.coarse.calibrator.extractor)
    coarse.coarse.calibrator.extractor = cached
    knn = KnnMethod(profile, extractor=cached)  # the very same backbone
    rows = []
    for ds_name, data in datasets.items():
        for k in shots:
            for name, method in (("SAM-LLaVA coarse (calibrated, Eq. 2)", coarse), ("PatchCore-style k-NN", knn)):
                res = evaluate(method, data, shots=k, seeds=tuple(seeds), image_size=size, progress=progress)
                rows.append({"data": ds_name, "method": name, "K": k, **_seed_stats(res)})
    return pd.DataFrame(rows)


def _seed_stats(res) -> dict[str, float]:
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


def model_dir(profile: Profile, tag: str = "main", epochs: int | None = None, shots: int = 1) -> Path:
    """Where :func:`trained_model` keeps the model of ``profile`` trained ``epochs`` (None: the profile's) with K=``shots``."""
    epochs = profile.train.epochs if epochs is None else epochs
    return checkpoint_dir() / f"{profile.name}-{tag}-{cache_key(profile, epochs=epochs, shots=shots)}"


def trained_model(profile: Profile, *, tag: str = "main", epochs: int | None = None, shots: int = 1,
                  overrides: dict | None = None, progress: bool = True, retrain: bool = False):
    """The profile's end-to-end model trained on the synthetic training set (seed 1), cached.

    Returns ``(model, history)``. The checkpoint lives in ``model_dir(profile, tag, ...)``, keyed
    by the whole profile and budget; a finished run is reused, an interrupted one resumes. The SAM
    warm-up is :func:`train_cascade` with the profile's warm-up budget (cached, shared with the
    segmentation notebooks).
    """
    import time

    from .model import build_model
    from .train import CHECKPOINT, load_checkpoint, prepare, train

    if overrides:
        profile = profile.replace(**overrides)
    epochs = profile.train.epochs if epochs is None else epochs
    out = model_dir(profile, tag, epochs=epochs, shots=shots)
    model = build_model(profile)
    done = out / "done.json"
    if done.exists() and not retrain:
        state = load_checkpoint(model, out / CHECKPOINT)
        return model.eval(), state["history"]
    start = time.perf_counter()
    resuming = (out / CHECKPOINT).is_file() and not retrain
    if profile.train.sam_warmup_steps > 0 and not resuming:
        _, warm, _ = train_cascade(profile, shots=shots, progress=progress)
        model.cascade.load_state_dict(_sam_side(warm), strict=False)
    examples = prepare(model, synthetic(profile, "train"), profile.data.image_size, shots=shots, progress=progress)
    history = train(model, examples, epochs=epochs, out_dir=out, resume=not retrain, progress=progress, warm_up=False)
    done.write_text(json.dumps({"epochs": epochs, "steps": len(history), "seconds": time.perf_counter() - start}))
    return model.eval(), history


def balanced_subset(data: dict[str, CategoryData], per_label: int | None) -> dict[str, CategoryData]:
    """The first ``per_label`` normal and first ``per_label`` anomalous test images of each category
    (in file order: deterministic, not chosen by result); None keeps everything.

    The language model's forward pass is the costly part of the description tables on a CPU; a
    balanced subset keeps chance at 50 % while bounding that cost.
    """
    if per_label is None:
        return data
    if per_label < 1:
        raise ValueError(f"per_label must be >= 1 or None, got {per_label}")
    out = {}
    for name, cat in data.items():
        test = [s for s in cat.test if s.label == 0][:per_label] + [s for s in cat.test if s.label == 1][:per_label]
        out[name] = CategoryData(cat.category, cat.root, cat.train, test, cat.has_masks)
    return out


def description_eval(model, data: dict[str, CategoryData], shots: int = 1, seed: int = 0, image_size: int | None = None,
                     max_new_tokens: int | None = None, progress: bool = False,
                     per_label: int | None = None) -> pd.DataFrame:
    """Yes/no accuracy (Table 5 rule) and position accuracy per category on held-out images
    (``per_label``: a balanced subset, :func:`balanced_subset`).

    Position accuracy: among anomalous images, the fraction whose answer names the right 3x3
    grid cell (chance is 1/9 for a uniform guess).
    """
    from .train import answer, prepare

    data = balanced_subset(data, per_label)
    examples = prepare(model, data, image_size or model.profile.data.image_size, shots=shots, seed=seed, progress=progress)
    answers = answer(model, examples, max_new_tokens=max_new_tokens, progress=progress)
    rows = []
    for ex, texts in zip(examples, answers):
        anomalous = ex.labels == 1
        pos_ok = [parse_position(t) == p for p, t, a in zip(ex.positions, texts, anomalous) if a]
        rows.append({"category": ex.category, "accuracy": 100 * metrics.description_accuracy(texts, ex.labels),
                     "position_accuracy": 100 * float(np.mean(pos_ok)) if pos_ok else float("nan"),
                     "n": len(texts)})
    return pd.DataFrame(rows), answers, examples


def position_baselines(examples, model=None) -> dict:
    """Position accuracy (percent) of two guesses that ignore the image, on the defective examples:
    uniform over the 9 grid cells, and always naming the most frequent true position; with ``model``
    also ``from_m_fine``: the grid cell of M_fine's centre of mass itself (what a perfect reader of the
    predicted mask says, the ceiling of a description that follows M_fine; "none" for an empty mask)."""
    from .data.instructions import position_on_grid

    keep = [(ex, i) for ex in examples for i, (p, label) in enumerate(zip(ex.positions, ex.labels))
            if label == 1 and p != NO_POSITION]
    truth = [ex.positions[i] for ex, i in keep]
    if not truth:
        raise ValueError("no defective example with a position: position accuracy is undefined")
    top = max(sorted(set(truth)), key=truth.count)
    out = {"uniform": 100 / len(POSITIONS), "most_frequent": 100 * truth.count(top) / len(truth),
           "most_frequent_position": top, "n_defective": len(truth)}
    if model is not None:
        with torch.no_grad():
            masks = {id(ex): model.fine(ex.enc).mask.cpu().numpy() for ex in examples}
        said = [position_on_grid(masks[id(ex)][i]) for ex, i in keep]
        out["from_m_fine"] = 100 * float(np.mean([s == t for s, t in zip(said, truth)]))
    return out


def log_odds_eval(model, data: dict[str, CategoryData], shots: int = 1, seed: int = 0, per_label: int | None = None) -> dict:
    """How well the answer's first token separates the classes, without decoding: AUROC of the
    yes/no log-odds (:func:`samllava.train.answer_log_odds`) and the accuracy of their sign, on a
    balanced subset of ``per_label`` images per label and category (None: all)."""
    from sklearn.metrics import roc_auc_score

    from .train import answer_log_odds, prepare

    examples = prepare(model, balanced_subset(data, per_label), model.profile.data.image_size, shots=shots, seed=seed, progress=False)
    labels = np.concatenate([ex.labels for ex in examples])
    odds = answer_log_odds(model, examples)
    return {"yes_no_auroc": 100 * float(roc_auc_score(labels, odds)), "sign_accuracy": 100 * float(((odds > 0) == labels).mean()),
            "said_yes": 100 * float((odds > 0).mean()), "n": int(len(labels))}


def log_odds_table(runs: dict[str, dict]) -> pd.DataFrame:
    """One row per model (e.g. before and after training) from :func:`log_odds_eval` results."""
    return pd.DataFrame([{"model": name, **r} for name, r in runs.items()])


def dataset_summary(sets: dict[str, dict[str, CategoryData]]) -> pd.DataFrame:
    """One row per (data set, category): train/good, test normal, test anomalous, defect types, masks."""
    rows = []
    for ds, data in sets.items():
        for name, cat in data.items():
            defects = sorted({s.defect_type for s in cat.test if s.label == 1})
            rows.append({"data": ds, "category": name, "train_good": len(cat.train),
                         "test_normal": sum(s.label == 0 for s in cat.test), "test_anomalous": sum(s.label == 1 for s in cat.test),
                         "defect_types": ", ".join(defects), "masks": "yes" if cat.has_masks else "no (pixel metrics n/a)"})
    return pd.DataFrame(rows)


def synthetic_gallery(data: dict[str, CategoryData], n: int = 6, size: int | None = None):
    """Figure: one anomalous image per category (image, mask, overlay) and the captions."""
    from . import viz

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


@torch.no_grad()
def coarse_figure(coarse, data: dict[str, CategoryData], n: int = 4, shots: int = 1, seed: int = 0, size: int = 256):
    """Figure: per row one anomalous image: image, ground truth, zero-shot H, few-shot H' and both Otsu masks."""
    from . import viz
    from .coarse import TextCache, category_phrase

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
        coarse.set_support(cat.load_images(sample_support(cat, shots, seed), size))
        fs = coarse(img, feats if coarse.zero_shot_active() else None)
        rows.append([img[0], gt, zs.calibrated[0], zs.mask[0], fs.calibrated[0], fs.mask[0]])
        titles.append(f"{name}\n{s.defect_type}")
    coarse.clear_support()
    fig = viz.image_grid(rows, row_titles=titles, col_titles=["image", "ground truth", "zero-shot H (Eq. 1)", "M_coarse (Otsu)",
                                                               f"few-shot H' (Eq. 2, K={shots})", "M'_coarse (Otsu)"])
    return fig, fs.terms


# --- stage 2: the cascade ------------------------------------------------------------------------

@torch.no_grad()
def cascade_inputs(coarse, cascade, data: dict[str, CategoryData], shots: int = 1, seed: int = 0,
                   size: int | None = None, batch_size: int = 16):
    """Coarse masks, SAM embeddings and ground truth of every test image (frozen work, done once)."""
    size = size or coarse.profile.data.image_size
    masks, embs, gts = [], [], []
    for name, cat in data.items():
        support = cat.load_images(sample_support(cat, shots, seed), size) if shots > 0 else None
        images = cat.load_images(cat.test, size)
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size]
            coarse(x, name, support)
            masks.append(coarse.last_output.mask)
            embs.append(cascade.embed(x))
        gts.append(cat.load_masks(cat.test, size)[:, 0])
    return torch.cat(embs), torch.cat(masks), torch.cat(gts)


def cache_key(profile: Profile, sections: tuple[str, ...] | None = None, **extra) -> str:
    """A short digest of the profile (or only its ``sections``, e.g. ``("sam", "train")``) and ``extra``
    settings: cached results are keyed by it, so a changed profile (or budget) never picks up a stale
    checkpoint."""
    import hashlib

    config = profile.to_dict()
    if sections is not None:
        config = {k: config[k] for k in sections}
    blob = json.dumps({"profile": config, **extra}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


# What the SAM side's training depends on: the coarse stage (its masks are SAM's prompts), SAM, the
# multi-scale parts and the data, plus its own steps, lr, batch size and seed (added by train_cascade);
# not SASA, the language model, LoRA or the end-to-end budget, so e.g. the "w/o SASA" variant and a
# longer end-to-end training reuse the main model's SAM warm-up.
SAM_SIDE_SECTIONS = ("clip", "fewshot", "sam", "multiscale", "data")


def _sam_side(cascade) -> dict[str, torch.Tensor]:
    """The trainable SAM side (prompt encoder, mask decoder, multi-scale parts): all but the frozen image encoder."""
    return {k: v for k, v in cascade.state_dict().items() if ".image_encoder." not in f".{k}"}


def train_cascade(profile: Profile, steps: int | None = None, lr: float | None = None, shots: int = 1, progress: bool = True,
                  data: dict[str, CategoryData] | None = None, coarse: CoarseMethod | None = None, cache: bool = True,
                  inputs=None):
    """SAM side alone (Sec. 3.2, Eq. 6); image encoder frozen. Detection metrics depend only on the
    coarse stage and SAM, so this is what the detection tables train.

    ``steps``/``lr`` default to the profile's SAM warm-up (``train.sam_warmup_steps``/``sam_warmup_lr``),
    so notebooks 03, 07, 09 and the end-to-end model share one trained SAM side. ``data`` defaults to
    the synthetic training set (seed 1); ``shots=0`` trains on zero-shot coarse masks. The result is
    cached under :func:`samllava.paths.checkpoint_dir`, keyed by profile, budget and data
    (``cache=False`` retrains). ``inputs``: a callable returning :func:`cascade_inputs` of ``data``,
    for callers that train several variants on the same frozen inputs (called only on a cache miss).
    Returns ``(coarse_method, cascade, losses)``; seeded by ``profile.train.seed``.
    """
    from .results import atomic_path
    from .sam import build_cascade
    from .sam.train import train_segmentation

    t = profile.train
    steps = steps or t.sam_warmup_steps or 200
    lr = lr or t.sam_warmup_lr
    coarse = coarse or CoarseMethod(profile)
    cascade = build_cascade(profile)  # the same frozen encoder as build_model's (samllava.seeding)
    data = data if data is not None else synthetic(profile, "train")
    key = cache_key(profile, SAM_SIDE_SECTIONS, steps=steps, lr=lr, batch_size=t.batch_size, seed=t.seed, shots=shots,
                    data=sorted(str(c.root) for c in data.values()))
    path = checkpoint_dir() / f"{profile.name}-cascade-{key}.pt"
    if cache and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = cascade.load_state_dict(state["sam_side"], strict=False)
        if unexpected or any(".image_encoder." not in f".{k}" for k in missing):
            raise ValueError(f"{path}: does not fit this cascade (unexpected {unexpected[:3]}, missing {missing[:3]}); delete it")
        return coarse, cascade.eval(), list(state["losses"])
    emb, masks, gt = inputs() if inputs is not None else cascade_inputs(coarse, cascade, data, shots=shots)
    losses = train_segmentation(cascade, emb, masks, gt, steps=steps, lr=lr, batch_size=t.batch_size, seed=t.seed,
                                progress=progress)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"sam_side": _sam_side(cascade), "losses": list(losses), "steps": steps, "lr": lr}, tmp)
    return coarse, cascade.eval(), losses


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Mean IoU over images that have a ground-truth defect; (N, H, W) bool/0-1 tensors."""
    pred, gt = pred.bool(), gt.bool()
    keep = gt.flatten(1).any(1)
    inter = (pred & gt)[keep].flatten(1).sum(1).float()
    union = (pred | gt)[keep].flatten(1).sum(1).float()
    return float((inter / union.clamp(min=1)).mean()) if keep.any() else float("nan")


def segmentation_table(coarse, cascade, data: dict[str, CategoryData], shots: int = 1, seeds=(0,),
                       size: int | None = None) -> pd.DataFrame:
    """Coarse only vs coarse + SAM: image/pixel AUROC, AUPRO and mask IoU (mean over categories and seeds)."""
    from .evaluate import CascadeMethod

    size = size or coarse.profile.data.image_size
    rows = []
    for name, method in (("coarse only (Eq. 1-2)", coarse), ("coarse + SAM cascade (Eq. 3-4)", CascadeMethod(coarse, cascade))):
        res = evaluate(method, data, shots=shots, seeds=tuple(seeds), image_size=size, progress=False)
        row = {"method": name, **{k: v for k, v in _seed_stats(res).items() if not k.endswith("_std")}}
        row["aupro"] = 100 * float(np.mean([c.summary()["aupro"] for c in res.values()]))
        rows.append(row)
    emb, cmask, gt = cascade_inputs(coarse, cascade, data, shots=shots, seed=seeds[0], size=size)
    with torch.no_grad():
        fine = torch.cat([cascade(emb[i:i + 16], cmask[i:i + 16], size).mask for i in range(0, len(emb), 16)])
    rows[0]["mask_iou"], rows[1]["mask_iou"] = 100 * mask_iou(cmask, gt), 100 * mask_iou(fine, gt)
    return pd.DataFrame(rows)


@torch.no_grad()
def cascade_figure(coarse, cascade, data: dict[str, CategoryData], n: int = 3, shots: int = 1, seed: int = 0,
                   size: int | None = None):
    """Figure: image, ground truth, H', M_coarse, the candidate masks with predicted IoU, M_fine."""
    from . import viz

    size = size or coarse.profile.data.image_size
    rows, titles = [], []
    for j, (name, cat) in enumerate(list(data.items())[:n]):
        s = [s for s in cat.test if s.label == 1][j % 3]
        img = cat.load_images([s], size)
        coarse(img, name, cat.load_images(sample_support(cat, shots, seed), size))
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
def prompt_types_figure(coarse, cascade, data: dict[str, CategoryData], prompts=("mask", "mask+box", "box", "point", "none"),
                        n: int = 3, shots: int = 1, seed: int = 0, size: int | None = None):
    """Figure: the fine mask of each prompt type (Tables 7 and 10) from the same SAM weights."""
    import dataclasses

    from . import viz
    from .sam import SamCascade

    size = size or coarse.profile.data.image_size
    variants = {}
    for p in prompts:
        v = SamCascade(cascade.sam, dataclasses.replace(cascade.cfg, prompt=p), cascade.ms).eval()
        if v.prompt_learner is not None and cascade.prompt_learner is not None:
            v.prompt_learner = cascade.prompt_learner  # the trained multi-scale prompt
        variants[p] = v
    rows, titles = [], []
    for j, (name, cat) in enumerate(list(data.items())[:n]):
        s = [s for s in cat.test if s.label == 1][j % 3]
        img = cat.load_images([s], size)
        coarse(img, name, cat.load_images(sample_support(cat, shots, seed), size))
        emb, cmask = cascade.embed(img), coarse.last_output.mask
        rows.append([img[0], cat.load_masks([s], size)[0, 0], cmask[0]] + [variants[p](emb, cmask, size).mask[0] for p in prompts])
        titles.append(name)
    return viz.image_grid(rows, row_titles=titles, col_titles=["image", "ground truth", "M_coarse", *prompts])


# --- stage 3: SASA and the describer -------------------------------------------------------------

@torch.no_grad()
def sasa_attention_figure(model, data: dict[str, CategoryData], shots: int = 1, seed: int = 0, n_words: int = 4):
    """Figure: image, M_fine, and the last SASA layer's text->vision attention of ``n_words`` state words.

    Each panel is one text token's attention over the g x g visual grid (Eq. 8), upsampled.
    """
    from . import viz
    from .coarse.prompts import ANOMALOUS_STATES, NORMAL_STATES

    name, cat = next(iter(data.items()))
    s = next(s for s in cat.test if s.label == 1)
    size = model.profile.data.image_size
    img = cat.load_images([s], size)
    model.set_support(cat.load_images(sample_support(cat, shots, seed), size) if shots else None)
    enc = model.encode(img, name)
    fine = model.fine(enc)
    out = model.sasa(model.sasa_features(enc), fine.mask.float(), enc.text_tokens)
    words = [w.format("").strip() or "(plain)" for w in NORMAL_STATES + ANOMALOUS_STATES]
    g = model.profile.sasa.grid
    panels = [img[0], cat.load_masks([s], size)[0, 0], fine.mask[0]]
    titles = ["image", "ground truth", "M_fine"]
    if out.attn:
        t2v = out.attn[-1]["t2v"][0]  # (N_t, g*g)
        picks = list(range(len(NORMAL_STATES) - n_words // 2, len(NORMAL_STATES) + (n_words - n_words // 2)))
        for k in picks:
            a = t2v[k].reshape(1, 1, g, g)
            panels.append(torch.nn.functional.interpolate(a, size=(size, size), mode="nearest")[0, 0])
            titles.append(f"'{words[k]}' -> V'")
    model.set_support(None)
    return viz.image_grid([panels], col_titles=titles), out


def parameter_table(profiles=("tiny", "offline")) -> pd.DataFrame:
    """Total, trainable and LoRA parameters (millions) of the whole model per profile; the paper
    profile's LLaVA part is counted on the meta device (no 7B weights loaded)."""
    from .bench import parameter_counts
    from .config import load_profile
    from .describe.lora import paper_parameter_counts
    from .model import build_model

    rows = []
    for name in profiles:
        m = build_model(load_profile(name))
        rows.append({"profile": name, "scope": "whole model", **parameter_counts(m)})
    paper = paper_parameter_counts()
    rows.append({"profile": "paper", "scope": "LLaVA-1.5-7B + LoRA only (meta device)", "total_M": paper["total"] / 1e6,
                 "trainable_M": paper["trainable"] / 1e6, "lora_M": paper["lora"] / 1e6})
    return pd.DataFrame(rows)


def answers_table(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per category and mean: accuracy and position accuracy before and after training."""
    t = before[["category", "accuracy", "position_accuracy"]].merge(
        after[["category", "accuracy", "position_accuracy"]], on="category", suffixes=("_before", "_after"))
    mean = {"category": "mean", **{c: t[c].mean() for c in t.columns if c != "category"}}
    return pd.concat([t, pd.DataFrame([mean])], ignore_index=True)


# --- paper artefacts -----------------------------------------------------------------------------

STANDIN_DOMAINS = {"textures": ("fabric", "wood_grain", "metal_plate", "concrete"), "objects": ("bottle_cap", "pill_tablet")}


def cross_domain_sets(profile: Profile, data_roots: dict | None = None) -> dict[str, tuple[dict, dict]]:
    """Table 1's two data sets as ``{name: (train data, test data)}``.

    Real MVTec-AD and VisA when both roots are given (a model trained on one data set's labelled
    test split is tested on the other's); else the synthetic stand-ins, textures and objects, trained
    on the synthetic training set (seed 1) and tested on the held-out set (seed 0).
    """
    from .data import load_mvtec, load_visa

    roots = data_roots or {}
    if "mvtec" in roots and "visa" in roots:
        mvtec, visa = load_mvtec(roots["mvtec"]), load_visa(roots["visa"])
        return {"MVTec-AD": (mvtec, mvtec), "VisA": (visa, visa)}
    train, test = synthetic(profile, "train"), synthetic(profile, "eval")
    pick = (lambda d, dom: {k: d[k] for k in STANDIN_DOMAINS[dom]})
    return {"stand-in MVTec-AD (synthetic textures)": (pick(train, "textures"), pick(test, "textures")),
            "stand-in VisA (synthetic objects)": (pick(train, "objects"), pick(test, "objects"))}


def zero_shot_table(profile: Profile, data_roots: dict | None = None, steps: int = 200, lr: float | None = None) -> pd.DataFrame:
    """Table 1: train on one data set, test zero-shot on the other, both directions.

    Measured in one harness: the WinCLIP-style zero-shot CLIP map (the coarse stage without
    support) and SAM-LLaVA's coarse + SAM cascade (SAM side trained on the source data set).
    Columns follow the paper: VisA -> MVTec-AD first, then MVTec-AD -> VisA.
    """
    from .evaluate import CascadeMethod
    from .paper_values import TABLE1

    sets = cross_domain_sets(profile, data_roots)
    (name_a, (train_a, test_a)), (name_b, (train_b, test_b)) = sets.items()
    coarse = CoarseMethod(profile)
    size = profile.data.image_size
    ours = {"WinCLIP-style zero-shot map (this harness)": [], "SAM-LLaVA coarse + SAM (this run)": []}
    columns = []
    for src_name, train_data, dst_name, test_data in ((name_b, train_b, name_a, test_a), (name_a, train_a, name_b, test_b)):
        _, cascade, _ = train_cascade(profile, steps=steps, lr=lr, shots=0, data=train_data, coarse=coarse, progress=False)
        columns += [f"{src_name} -> {dst_name}: image AUROC", f"{src_name} -> {dst_name}: pixel AUROC"]
        for name, method in zip(ours, (coarse, CascadeMethod(coarse, cascade))):
            st = _seed_stats(evaluate(method, test_data, shots=0, image_size=size, progress=False))
            ours[name] += [st["image_auroc"], st["pixel_auroc"]]
    rows = [[name, *vals] for name, vals in ours.items()]
    rows += [[f"{m} (paper)", *TABLE1[m]] for m in ("WinCLIP", "SPGDD-GPT", "SAM-LLaVA")]
    return pd.DataFrame(rows, columns=["method", *columns])


def fewshot_pixel_tables(profile: Profile, coarse: CoarseMethod, cascade, data: dict[str, CategoryData],
                         shots=(1, 2, 4), seeds=FEWSHOT_SEEDS) -> dict[int, pd.DataFrame]:
    """Tables 2-4: pixel AUROC per TADD (stand-in) subset, mean over seeds, for each K; methods in
    one harness (SAM-LLaVA, coarse only, PatchCore-style k-NN, WinCLIP-style zero-shot) beside
    the paper's SAM-LLaVA, PatchCore and WinCLIP columns."""
    from .coarse.backbone import CachedExtractor
    from .evaluate import CascadeMethod
    from .paper_values import TABLES2_4

    size = profile.data.image_size
    if not isinstance(coarse.coarse.calibrator.extractor, CachedExtractor):
        coarse.coarse.calibrator.extractor = CachedExtractor(coarse.coarse.calibrator.extractor)
    methods = {"SAM-LLaVA (this run)": CascadeMethod(coarse, cascade), "coarse only (this run)": coarse,
               "PatchCore-style k-NN (this run)": KnnMethod(profile, extractor=coarse.coarse.calibrator.extractor)}
    zero = {name: r.summary()["pixel_auroc"] for name, r in evaluate(coarse, data, shots=0, image_size=size, progress=False).items()}
    tables = {}
    for k in shots:
        cols = {name: evaluate(m, data, shots=k, seeds=tuple(seeds), image_size=size, progress=False) for name, m in methods.items()}
        rows = []
        for subset in data:
            row = {"subset": subset}
            row.update({name: 100 * res[subset].summary()["pixel_auroc"] for name, res in cols.items()})
            row["WinCLIP-style zero-shot (this harness)"] = 100 * zero[subset]
            paper = TABLES2_4.get(subset, {})
            for m in ("SAM-LLaVA", "PatchCore", "WinCLIP"):
                row[f"{m} (paper)"] = paper.get(m, (np.nan,) * 3)[(1, 2, 4).index(k)]
            rows.append(row)
        df = pd.DataFrame(rows)
        mean = {"subset": "mean", **{c: df[c].mean() for c in df.columns if c != "subset"}}
        tables[k] = pd.concat([df, pd.DataFrame([mean])], ignore_index=True)
    return tables


def figure2(tables: dict[int, pd.DataFrame]):
    """Figure 2: mean pixel AUROC per method for each K (this run's methods, and the paper's means)."""
    import matplotlib.pyplot as plt

    from .paper_values import FIGURE2_MEAN

    ks = sorted(tables)
    ours = [c for c in tables[ks[0]].columns if c.endswith("(this run)") or c.endswith("(this harness)")]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / (len(ours) + len(FIGURE2_MEAN))
    for i, col in enumerate(ours):
        ax.bar(np.arange(len(ks)) + i * width, [tables[k][col].iloc[-1] for k in ks], width, label=col)
    for j, (m, vals) in enumerate(FIGURE2_MEAN.items()):
        ax.bar(np.arange(len(ks)) + (len(ours) + j) * width, vals, width, label=f"{m} (paper, 21 TADD subsets)", hatch="//", alpha=0.6)
    ax.set_xticks(np.arange(len(ks)) + 0.4 - width / 2, [f"{k}-shot" for k in ks])
    ax.set_ylabel("mean pixel AUROC (%)")
    ax.set_ylim(40, 100)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


@torch.no_grad()
def segmentation_comparison_figure(profile: Profile, coarse: CoarseMethod, cascade, data: dict[str, CategoryData],
                                   n: int = 4, shots: int = 1, seed: int = 0):
    """Figure 5: input, ground truth, the masks of the compared methods (Otsu of each map), SAM-LLaVA's
    fine mask, and the coarse heatmap."""
    from . import viz
    from .coarse import otsu_masks

    size = profile.data.image_size
    knn = KnnMethod(profile, extractor=coarse.coarse.calibrator.extractor)
    rows, titles = [], []
    for j, (name, cat) in enumerate(list(data.items())[:n]):
        s = [s for s in cat.test if s.label == 1][j % 3]
        img = cat.load_images([s], size)
        support = cat.load_images(sample_support(cat, shots, seed), size)
        zs_map, _ = coarse(img, name, None)
        zs_mask = coarse.last_output.mask
        knn_map, _ = knn(img, name, support)
        coarse(img, name, support)
        out = coarse.last_output
        fine = cascade(cascade.embed(img), out.mask, size)
        rows.append([img[0], cat.load_masks([s], size)[0, 0], zs_mask[0], otsu_masks(knn_map)[0], out.mask[0], fine.mask[0],
                     out.calibrated[0]])
        titles.append(name)
    cols = ["input", "ground truth", "WinCLIP-style (zero-shot)", "PatchCore-style k-NN", "coarse only (M'_coarse)",
            "SAM-LLaVA (M_fine)", "coarse heatmap H'"]
    return viz.image_grid(rows, row_titles=titles, col_titles=cols)


def accuracy_table(model, data: dict[str, CategoryData], shots=(1, 2, 4), seeds=(0, 1, 2), max_new_tokens: int = 3,
                   per_label: int | None = None) -> pd.DataFrame:
    """Table 5: yes/no description accuracy, mean ± std over support seeds, per K, beside the paper's rows.

    The answer's first word decides (Table 5 rule), so a few generated tokens suffice;
    ``per_label`` evaluates a balanced subset (:func:`balanced_subset`)."""
    from .paper_values import TABLE5

    rows = []
    for k in shots:
        accs = [float(description_eval(model, data, shots=k, seed=s, max_new_tokens=max_new_tokens,
                                       per_label=per_label)[0]["accuracy"].mean())
                for s in seeds]
        m, sd = metrics.mean_std(accs) if len(accs) > 1 else (accs[0], float("nan"))
        rows.append({"K": k, "method": "SAM-LLaVA (this run)", "accuracy": m, "std": sd,
                     "paper MVTec-AD": np.nan, "paper VisA": np.nan})
        for method, ((mv, mv_sd), (vi, vi_sd)) in TABLE5.get(k, {}).items():
            rows.append({"K": k, "method": f"{method} (paper)", "accuracy": np.nan, "std": np.nan,
                         "paper MVTec-AD": mv, "paper VisA": vi})
    return pd.DataFrame(rows)


def judge_table(model, data: dict[str, CategoryData], judge, shots: int = 1, seed: int = 0, max_new_tokens: int = 40,
                per_label: int | None = None):
    """Table 6: the judge's mean score on abnormal, normal and all images (generated descriptions),
    beside the paper's GPT-4V scores; also returns one defective and one normal example (Figs. 3-4).
    ``per_label``: judge a balanced subset (:func:`balanced_subset`)."""
    from .paper_values import TABLE6

    data = balanced_subset(data, per_label)

    _, answers, examples = description_eval(model, data, shots=shots, seed=seed, max_new_tokens=max_new_tokens)
    by_label = {0: [], 1: []}
    picked = {}
    for ex, texts in zip(examples, answers):
        cat = data[ex.category]
        for i, text in enumerate(texts):
            s = cat.test[i]
            truth = {"label": int(ex.labels[i]), **({k: s.meta.get(k) for k in ("position", "size", "shape", "colour")} if s.label else {}),
                     **({"defect_type": s.defect_type} if s.label else {})}
            score = judge.score(text, truth, s.image_path)
            by_label[int(ex.labels[i])].append(score)
            kind = "defective" if s.label else "normal"
            if kind not in picked:
                picked[kind] = {"kind": kind, "image": ex.enc.images[i], "description": text, "score": score,
                                "truth": s.description or "", "category": ex.category}
    rows = [{"method": f"SAM-LLaVA (this run; judge: {judge.name})", "abnormal": np.mean(by_label[1]),
             "normal": np.mean(by_label[0]), "all": np.mean(by_label[0] + by_label[1])}]
    rows += [{"method": f"{m} (paper; GPT-4V)", "abnormal": a, "normal": n, "all": al} for m, (a, n, al) in TABLE6.items()]
    return pd.DataFrame(rows), [picked[k] for k in ("defective", "normal") if k in picked]


def qualitative_figure(examples: list[dict]):
    """Figures 3-4: the image and the generated description with its judge score."""
    import textwrap

    import matplotlib.pyplot as plt

    from . import viz

    fig, axes = plt.subplots(len(examples), 2, figsize=(9, 3 * len(examples)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]})
    for row, e in zip(axes, examples):
        row[0].imshow(viz.to_numpy_image(e["image"]))
        row[0].set_title(f"{e['category']} ({e['kind']})", fontsize=9)
        row[0].axis("off")
        text = f"generated (score {e['score']:.0f}):\n" + textwrap.fill(e["description"], 60)
        text += "\n\nground truth:\n" + textwrap.fill(e["truth"], 60)
        row[1].text(0, 1, text, va="top", fontsize=8, family="monospace")
        row[1].axis("off")
    fig.tight_layout()
    return fig


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
                   seeds=(0,), accuracy_variants=(), per_label: int | None = None) -> pd.DataFrame:
    """Tables 7-10 in one table: image/pixel AUROC per variant (SAM side trained ``steps`` per variant,
    1-shot; image score = max of the combined map) and, for ``accuracy_variants``, the yes/no accuracy
    of the variant trained end to end with the profile's budget (the full variant is the main model
    of notebook 05, cached), on a balanced subset of ``per_label`` images per label and category."""
    from functools import lru_cache

    from .coarse.backbone import CachedExtractor
    from .evaluate import CascadeMethod
    from .memo import ContentMemo
    from .paper_values import ABLATIONS as PAPER
    from .sam import build_cascade

    # The variants differ only in SAM's prompting and decoder, so the frozen work is shared: the few-shot
    # backbone's features and SAM's image embeddings are computed once for all variants and seeds, and
    # the SAM-side training inputs (coarse masks, embeddings of the training set) once for all variants.
    coarse = CoarseMethod(profile)
    coarse.coarse.calibrator.extractor = CachedExtractor(coarse.coarse.calibrator.extractor)
    encoder = build_cascade(profile)  # every variant's image encoder is this one (same config and seed)
    embed = ContentMemo(encoder.embed, max_batches=64)
    train_data = synthetic(profile, "train")
    train_inputs = lru_cache(maxsize=1)(lambda: cascade_inputs(coarse, encoder, train_data, shots=1))
    rows = []
    trained_sam = {}
    for name, changes in ABLATIONS.items():
        variant = profile.replace(**changes) if changes else profile
        sam_key = (variant.sam.prompt, variant.multiscale.prompt_learner, variant.multiscale.decoder)
        if sam_key not in trained_sam:  # "w/o SASA" shares the full model's SAM side
            cascade = train_cascade(variant, steps=steps, lr=lr, shots=1, coarse=coarse, data=train_data, progress=False,
                                    inputs=train_inputs)[1]
            cascade.sam.image_encoder = encoder.sam.image_encoder  # frozen and identical (test_pipeline): share it
            trained_sam[sam_key] = cascade
        method = CascadeMethod(coarse, trained_sam[sam_key], score="map_max", embed=embed)
        st = _seed_stats(evaluate(method, data, shots=1, seeds=tuple(seeds), image_size=profile.data.image_size, progress=False))
        acc = np.nan
        if name in accuracy_variants:
            model, _ = trained_model(variant, progress=False)  # keyed by the variant's profile: "full" is the main model
            acc = float(description_eval(model, data, shots=1, max_new_tokens=3, per_label=per_label)[0]["accuracy"].mean())
        p = PAPER[name]
        rows.append({"variant": name, "image_auroc": st["image_auroc"], "pixel_auroc": st["pixel_auroc"], "accuracy": acc,
                     "paper MVTec image": p[0], "paper MVTec pixel": p[1], "paper MVTec acc": p[2],
                     "paper VisA image": p[3], "paper VisA pixel": p[4], "paper VisA acc": p[5]})
    return pd.DataFrame(rows)


def gpu_rows(path: str | Path | None) -> list[dict]:
    """Table 11 rows from a ``benchmarks/gpu_bench.py`` result (paper-size models, random weights, named
    card): batch 1 latency and peak memory, and the best batched throughput. None or a missing file: no rows."""
    if path is None or not Path(path).is_file():
        return []
    g = json.loads(Path(path).read_text())["gpu"]
    fast = g.get("end_to_end_fast", {})
    one = fast.get("batch_1", {})
    best = max((v for v in fast.values() if "images_per_s" in v), key=lambda v: v["images_per_s"], default={})
    best_batch = next((k for k, v in fast.items() if v is best), "n/a")
    return [{"model": f"SAM-LLaVA, paper profile, random weights ({g['device']}, {g['dtype']}, batch 1 / best {best_batch}; "
                      f"{Path(path).name})",
             "total_M": g["params"]["total_M"], "trainable_M": g["params"]["trainable_M"], "lora_M": g["params"]["lora_M"],
             "training_time_h": np.nan, "latency_ms": one.get("mean_ms", np.nan),
             "throughput_img_s": best.get("images_per_s", np.nan), "peak_memory_GB": one.get("peak_memory_GB", np.nan)}]


def complexity_table(profile: Profile, device: str = "cpu", runs: int = 5, warmup: int = 1, new_tokens: int = 32,
                     gpu_json: str | Path | None = None) -> pd.DataFrame:
    """Table 11: parameters (this profile measured; the paper profile counted on the meta device),
    latency, throughput and peak memory measured on ``device``, beside the paper's row; with
    ``gpu_json``, the paper-size GPU benchmark's row (:func:`gpu_rows`), never a CPU number."""
    from .bench import bench, paper_profile_counts
    from .paper_values import TABLE11

    r = bench(profile, device=device, runs=runs, warmup=warmup, new_tokens=new_tokens, batch_sizes=(1,), random=False,
              log=lambda m: None)
    e2e = r["end_to_end"]["batch_1"]
    hist_time = _training_time(profile)
    rows = [{"model": f"SAM-LLaVA, {profile.name} profile (this run, {r['device']})", "total_M": r["params"]["total_M"],
             "trainable_M": r["params"]["trainable_M"], "lora_M": r["params"]["lora_M"], "training_time_h": hist_time,
             "latency_ms": e2e.get("mean_ms", np.nan), "throughput_img_s": e2e.get("images_per_s", np.nan),
             "peak_memory_GB": r["peak_memory_GB"]}]
    pc = paper_profile_counts()
    rows.append({"model": "SAM-LLaVA, paper profile (counted from its configuration)", "total_M": pc["total_M"],
                 "trainable_M": pc["trainable_M"], "lora_M": pc["lora_M"], "training_time_h": np.nan, "latency_ms": np.nan,
                 "throughput_img_s": np.nan, "peak_memory_GB": np.nan})
    rows += gpu_rows(gpu_json)
    for m, v in TABLE11.items():
        rows.append({"model": f"{m} (paper, L40)", "total_M": v["total_M"], "trainable_M": v["trainable_M"],
                     "lora_M": v.get("lora_M", np.nan), "training_time_h": v["train_hours"], "latency_ms": v["latency_ms"],
                     "throughput_img_s": v.get("throughput_img_s", np.nan), "peak_memory_GB": v.get("peak_memory_GB", np.nan)})
    return pd.DataFrame(rows)


def _training_time(profile: Profile) -> float:
    """Hours of the cached main training run of ``profile`` (NaN when it has not run)."""
    done = model_dir(profile) / "done.json"
    if not done.exists():
        return float("nan")
    return json.loads(done.read_text()).get("seconds", float("nan")) / 3600
