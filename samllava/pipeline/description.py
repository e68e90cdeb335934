"""Description notebooks: the trained end-to-end model (cached, shared), yes/no and position accuracy, log-odds, Tables 5-6, Figs. 3-4."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import metrics
from ..config import Profile
from ..data import CategoryData, sample_support
from ..data.instructions import NO_POSITION, POSITIONS, parse_position
from ..paths import checkpoint_dir
from .data import balanced_subset, synthetic
from .detection import sam_side_state, cache_key, train_cascade


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

    from ..model import build_model
    from ..train import CHECKPOINT, load_checkpoint, prepare, train

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
        model.cascade.load_state_dict(sam_side_state(warm), strict=False)
    examples = prepare(model, synthetic(profile, "train"), profile.data.image_size, shots=shots, progress=progress)
    history = train(model, examples, epochs=epochs, out_dir=out, resume=not retrain, progress=progress, warm_up=False)
    done.write_text(json.dumps({"epochs": epochs, "steps": len(history), "seconds": time.perf_counter() - start}))
    return model.eval(), history


def description_eval(model, data: dict[str, CategoryData], shots: int = 1, seed: int = 0, image_size: int | None = None,
                     max_new_tokens: int | None = None, progress: bool = False,
                     per_label: int | None = None) -> tuple[pd.DataFrame, list[list[str]], list]:
    """Yes/no accuracy (Table 5 rule) and position accuracy per category on held-out images
    (``per_label``: a balanced subset, :func:`balanced_subset`).

    Position accuracy: among anomalous images, the fraction whose answer names the right 3x3
    grid cell (chance is 1/9 for a uniform guess). Returns ``(table, answers, examples)``.
    """
    from ..train import answer, prepare

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


def position_baselines(examples, model=None, oracle_masks: bool = False) -> dict:
    """Position accuracy (percent) of two guesses that ignore the image, on the defective examples:
    uniform over the 9 grid cells, and always naming the most frequent true position; with ``model``
    also ``from_m_fine``: the grid cell of M_fine's centre of mass itself (what a perfect reader of the
    predicted mask says, the ceiling of a description that follows M_fine; "none" for an empty mask).
    ``oracle_masks``: the ground-truth mask stands in for M_fine, as in :func:`samllava.train.answer`."""
    from ..data.instructions import position_on_grid

    keep = [np.flatnonzero((np.asarray(ex.labels) == 1) & (np.asarray(ex.positions) != NO_POSITION)) for ex in examples]
    truth = [ex.positions[i] for ex, idx in zip(examples, keep) for i in idx]
    if not truth:
        raise ValueError("no defective example with a position: position accuracy is undefined")
    top = max(sorted(set(truth)), key=truth.count)
    out = {"uniform": 100 / len(POSITIONS), "most_frequent": 100 * truth.count(top) / len(truth),
           "most_frequent_position": top, "n_defective": len(truth)}
    if model is not None or oracle_masks:
        with torch.no_grad():
            said = [position_on_grid(m) for ex, idx in zip(examples, keep)
                    for m in (ex.gt > 0.5 if oracle_masks else model.fine(ex.enc).mask).cpu().numpy()[idx]]
        out["from_m_fine"] = 100 * float(np.mean([s == t for s, t in zip(said, truth)]))
    return out


def log_odds_eval(model, data: dict[str, CategoryData], shots: int = 1, seed: int = 0, per_label: int | None = None) -> dict:
    """How well the answer's first token separates the classes, without decoding: AUROC of the
    yes/no log-odds (:func:`samllava.train.answer_log_odds`) and the accuracy of their sign, on a
    balanced subset of ``per_label`` images per label and category (None: all)."""
    from sklearn.metrics import roc_auc_score

    from ..train import answer_log_odds, prepare

    examples = prepare(model, balanced_subset(data, per_label), model.profile.data.image_size, shots=shots, seed=seed, progress=False)
    labels = np.concatenate([ex.labels for ex in examples])
    odds = answer_log_odds(model, examples)
    return {"yes_no_auroc": 100 * float(roc_auc_score(labels, odds)), "sign_accuracy": 100 * float(((odds > 0) == labels).mean()),
            "said_yes": 100 * float((odds > 0).mean()), "n": int(len(labels))}


def log_odds_table(runs: dict[str, dict]) -> pd.DataFrame:
    """One row per model (e.g. before and after training) from :func:`log_odds_eval` results."""
    return pd.DataFrame([{"model": name, **r} for name, r in runs.items()])


# --- stage 3: SASA and the describer -------------------------------------------------------------

@torch.no_grad()
def sasa_attention_figure(model, data: dict[str, CategoryData], shots: int = 1, seed: int = 0, n_words: int = 4):
    """Figure: image, M_fine, and the last SASA layer's text->vision attention of ``n_words`` state words.

    Each panel is one text token's attention over the g x g visual grid (Eq. 8), upsampled.
    """
    from .. import viz
    from ..coarse.prompts import ANOMALOUS_STATES, NORMAL_STATES

    name, cat = next(iter(data.items()))
    s = next(s for s in cat.test if s.label == 1)
    size = model.profile.data.image_size
    img = cat.load_images([s], size)
    model.set_support(cat.load_images(sample_support(cat, shots, seed), size) if shots else None)
    enc = model.encode(img, name)
    fine = model.fine(enc)
    out = model.sasa(enc.embeddings, fine.mask.float(), enc.text_tokens)
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


def answers_table(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per category and mean: accuracy and position accuracy before and after training."""
    t = before[["category", "accuracy", "position_accuracy"]].merge(
        after[["category", "accuracy", "position_accuracy"]], on="category", suffixes=("_before", "_after"))
    mean = {"category": "mean", **{c: t[c].mean() for c in t.columns if c != "category"}}
    return pd.concat([t, pd.DataFrame([mean])], ignore_index=True)


def accuracy_table(model, data: dict[str, CategoryData], shots=(1, 2, 4), seeds=(0, 1, 2), max_new_tokens: int = 3,
                   per_label: int | None = None) -> pd.DataFrame:
    """Table 5: yes/no description accuracy, mean ± std over support seeds, per K, beside the paper's rows.

    The answer's first word decides (Table 5 rule), so a few generated tokens suffice;
    ``per_label`` evaluates a balanced subset (:func:`balanced_subset`)."""
    from ..paper_values import TABLE5

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
    from ..paper_values import TABLE6

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

    from .. import viz

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
