"""Description notebooks: Tables 5-6, Figs. 3-4, the before/after and log-odds tables, SASA's attention
(the answers and their scores come from :mod:`samllava.evaluate.answers`)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from samllava.evaluate.words import reported_words, words_eval, words_summary
from samllava import metrics
from samllava.report import figures as viz
from samllava.evaluate.answers import description_eval, log_odds_eval, position_baselines
from samllava.core.config import Profile
from samllava.coarse.prompts import ANOMALOUS_STATES, NORMAL_STATES
from samllava.data import CategoryData, balanced_subset, sample_support
from samllava.data.instructions import parse_position
from samllava.report import runs as R
from samllava.report.paper_values import TABLE5, TABLE6
from samllava.report.runs import RunLog
from samllava.notebook.tables.trained import trained_model
from samllava.notebook.tables.training_seeds import with_training_seed


def log_odds_table(runs: dict[str, dict], key: str = "model") -> pd.DataFrame:
    """One row per run (a model before and after training, or a data set) from :func:`log_odds_eval` results."""
    return pd.DataFrame([{key: name, **r} for name, r in runs.items()])


# --- stage 3: SASA and the describer -------------------------------------------------------------

@torch.no_grad()
def sasa_attention_figure(model, data: dict[str, CategoryData], shots: int = 1, seed: int = 0, n_words: int = 4):
    """Figure: image, M_fine, and the last SASA layer's text->vision attention of ``n_words`` state words.

    Each panel is one text token's attention over the g x g visual grid (Eq. 8), upsampled.
    """
    name, cat = next(iter(data.items()))
    s = next(s for s in cat.test if s.label == 1)
    size = model.profile.data.image_size
    img = cat.load_images([s], size)
    model.set_support(cat.load_images(sample_support(cat, shots, seed), size) if shots else None)
    enc = model.encode(img, name)
    fine = model.fine(enc)
    feats = model.cascade.image_embedding(enc.embeddings)  # F_sam (through the stand-in's adapter, if any)
    out = model.sasa(feats, fine.mask.float(), enc.text_tokens)
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


@dataclass
class TrainedRun:
    """One training seed's end-to-end model, evaluated as notebook 05 reports it (the model itself is not kept)."""

    seed: int
    history: list[dict]  # one dict per step: epoch, step, total, seg, gen
    answers: pd.DataFrame  # description_eval's table: accuracy and position accuracy per category
    texts: list[list[str]]  # the generated answers, per category
    examples: list  # description_eval's Examples
    chance: dict  # position_baselines (uniform, most frequent, M_fine's own centre)
    follow: dict[str, dict]  # log_odds_eval per named data set


def trained_runs(profile: Profile, train_seeds, eval_data: dict[str, CategoryData], sets: dict[str, dict], *,
                 shots: int, max_new_tokens: int, per_label: int | None, odds_per_label: int | None,
                 epochs: int | None = None, device=None) -> list[TrainedRun]:
    """Notebook 05 per training seed: the end-to-end model trained with that seed (:func:`trained_model`,
    cached), its answers on ``eval_data`` (yes/no and position) and its first-token yes/no log-odds on each
    of ``sets``. One model is in memory at a time."""
    runs = []
    for seed in train_seeds:
        model, history = trained_model(with_training_seed(profile, seed), epochs=epochs, shots=shots, device=device)
        answers, texts, examples = description_eval(model, eval_data, shots=shots, max_new_tokens=max_new_tokens,
                                                    per_label=per_label)
        follow = {name: log_odds_eval(model, d, shots=shots, per_label=odds_per_label) for name, d in sets.items()}
        runs.append(TrainedRun(seed, history, answers, texts, examples, position_baselines(examples, model), follow))
        del model
    return runs


def before_after_runs(examples, answers: list[list[str]], trained: list[TrainedRun]) -> pd.DataFrame:
    """The per-image outcomes behind ``training_before_after`` (:func:`answer_runs`): the untrained model's
    ``answers`` on ``examples`` (no training seed) and each trained run's, on the same images."""
    log = RunLog()
    answer_runs(log, R.BEFORE, examples, answers)
    for run in trained:
        answer_runs(log, R.AFTER, run.examples, run.texts, training_seed=run.seed)
    return log.frame()


def answers_table(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per category and mean: accuracy and position accuracy before and after training."""
    t = before[["category", "accuracy", "position_accuracy"]].merge(
        after[["category", "accuracy", "position_accuracy"]], on="category", suffixes=("_before", "_after"))
    mean = {"category": "mean", **{c: t[c].mean() for c in t.columns if c != "category"}}
    return pd.concat([t, pd.DataFrame([mean])], ignore_index=True)


def answer_runs(runs: RunLog, arm: str, examples, answers: list[list[str]], *, training_seed: int | None = None,
                support_seed: int = 0, **labels) -> None:
    """Append the per-image outcome of ``answers`` (``description_eval``'s, one list per example) to ``runs``:
    ``correct`` (100 when the yes/no matches the label, Table 5 rule, else 0) for every image, and
    ``position_correct`` (100 when the named 3x3 position is the true one) for every defective image; the unit
    is ``<category>/<index in the example>``."""
    for ex, texts in zip(examples, answers):
        for i, (text, label, position) in enumerate(zip(texts, ex.labels, ex.positions)):
            unit = f"{ex.category}/{i}"
            said = metrics.parse_yes_no(text)
            runs.add(arm, "correct", 100.0 * (said is not None and said == bool(label)), training_seed=training_seed,
                     support_seed=support_seed, unit=unit, **labels)
            if label == 1:
                runs.add(arm, "position_correct", 100.0 * (parse_position(text) == position),
                         training_seed=training_seed, support_seed=support_seed, unit=unit, **labels)


def accuracy_table(models, data: dict[str, CategoryData], shots=(1, 2, 4), seeds=(0, 1, 2), max_new_tokens: int = 3,
                   per_label: int | None = None, runs: RunLog | None = None, training_seeds=None) -> pd.DataFrame:
    """Table 5: yes/no description accuracy, mean ± std over the runs (every model of ``models``, one per
    training seed, with every support seed of ``seeds``), per K, beside the paper's rows.

    ``models`` is iterated once (a generator keeps one model in memory at a time). The answer's first word
    decides (Table 5 rule), so a few generated tokens suffice; ``per_label`` evaluates a balanced subset
    (:func:`balanced_subset`). ``runs``: gets every image's outcome (:func:`answer_runs`) per K, support seed
    and training seed (``training_seeds``, in the order of ``models``; default 0, 1, ...)."""
    accs: dict[int, list[float]] = {k: [] for k in shots}
    for m, model in enumerate(models):
        training_seed = m if training_seeds is None else list(training_seeds)[m]
        for k in shots:
            for s in seeds:
                table, answers, examples = description_eval(model, data, shots=k, seed=s,
                                                            max_new_tokens=max_new_tokens, per_label=per_label)
                accs[k].append(float(table["accuracy"].mean()))
                if runs is not None:
                    answer_runs(runs, R.OURS, examples, answers, training_seed=training_seed, support_seed=s, K=k)
    if not all(accs.values()):
        raise ValueError("accuracy_table needs at least one model")
    rows = []
    for k in shots:
        m, sd = metrics.mean_std(accs[k])
        rows.append({"K": k, "method": "SAM-LLaVA (this run)", "accuracy": m, "std": sd,
                     "paper MVTec-AD": np.nan, "paper VisA": np.nan})
        for method, ((mv, _), (vi, _)) in TABLE5.get(k, {}).items():
            rows.append({"K": k, "method": f"{method} (paper)", "accuracy": np.nan, "std": np.nan,
                         "paper MVTec-AD": mv, "paper VisA": vi})
    return pd.DataFrame(rows)


def whose_yes_no(profile: Profile) -> str:
    """Whose decision an answer's yes/no is, for a table's note."""
    if profile.llm.answer_from_verdict:
        return ("the yes/no is the calibrated verdict's (llm.answer_from_verdict: the coarse stage's p-value against "
                "the K normal images, which the answer states), not the language model's own: no training changes it")
    return "the yes/no is the language model's own answer"


def accuracy_note(profile: Profile, answer_seeds, seeds, per_label: int | None) -> str:
    """Table 5's note: what the ± covers, the images, and whose yes/no it is (:func:`whose_yes_no`)."""
    images = "all test images" if per_label is None else f"{per_label} normal + {per_label} anomalous images"
    return (f"mean ± std over training seeds {list(answer_seeds)} x support seeds {list(seeds)}; {images} per "
            f"category; {whose_yes_no(profile)}; paper rows are on MVTec-AD / VisA")


def words_table(models, datasets: dict[str, dict[str, CategoryData]], shots: int = 1, seeds=(0,),
                max_new_tokens: int | None = None) -> pd.DataFrame:
    """How true the words are, per data set (:mod:`samllava.evaluate.words`): every test image, every model of
    ``models`` (one per training seed) with every support seed; percentages over all of them."""
    rows = {name: [] for name in datasets}
    for model in models:
        for name, data in datasets.items():
            rows[name] += [words_eval(model, data, shots=shots, seed=s, max_new_tokens=max_new_tokens) for s in seeds]
    return pd.DataFrame([{"data": name, **words_summary(pd.concat(parts))} for name, parts in rows.items()])


def judge_table(model, data: dict[str, CategoryData], judge, shots: int = 1, seed: int = 0, max_new_tokens: int = 40,
                per_label: int | None = None, runs: RunLog | None = None, training_seed: int | None = None):
    """Table 6: the judge's mean score on abnormal, normal and all images (the reported words),
    beside the paper's GPT-4V scores; also returns one defective and one normal example (Figs. 3-4).
    ``per_label``: judge a balanced subset (:func:`balanced_subset`). ``runs``: gets every image's score
    (``score``, unit ``<category>/<index>``, ``label`` abnormal or normal), tagged with ``training_seed``."""
    data = balanced_subset(data, per_label)

    _, answers, examples = description_eval(model, data, shots=shots, seed=seed, max_new_tokens=max_new_tokens)
    by_label = {0: [], 1: []}
    picked = {}
    for ex, words in zip(examples, reported_words(model, examples, answers)):
        cat = data[ex.category]
        for i, (text, _, _) in enumerate(words):  # the words a diagnosis reports
            s = cat.test[i]
            truth = {
                "label": int(ex.labels[i]),
                **({k: s.meta.get(k) for k in ("position", "size", "shape", "colour")} if s.label else {}),
                **({"defect_type": s.defect_type} if s.label else {}),
            }
            score = judge.score(text, truth, s.image_path)
            by_label[int(ex.labels[i])].append(score)
            if runs is not None:
                runs.add(R.OURS, "score", score, training_seed=training_seed, support_seed=seed,
                         unit=f"{ex.category}/{i}", label="abnormal" if ex.labels[i] else "normal")
            kind = "defective" if s.label else "normal"
            if kind not in picked:
                picked[kind] = {"kind": kind, "image": ex.enc.images[i], "description": text, "score": score,
                                "truth": s.description or "", "category": ex.category}
    rows = [{"method": f"SAM-LLaVA (this run; judge: {judge.name})", "abnormal": np.mean(by_label[1]),
             "normal": np.mean(by_label[0]), "all": np.mean(by_label[0] + by_label[1])}]
    rows += [
        {"method": f"{m} (paper; GPT-4V)", "abnormal": a, "normal": n, "all": al} for m, (a, n, al) in TABLE6.items()
    ]
    return pd.DataFrame(rows), [picked[k] for k in ("defective", "normal") if k in picked]


def judge_caption(judge_name: str) -> str:
    """Whose score Figs. 3-4 show: the paper's is GPT-4V's, so any other judge is named as not GPT-4V."""
    if "gpt-4" in judge_name.lower():
        return f"scores: {judge_name}"
    return f"scores: {judge_name}, not GPT-4V (the paper's judge): not comparable with the paper's scores"


def qualitative_figure(examples: list[dict], judge_name: str = "the offline grounded judge"):
    """Figures 3-4: the image and the generated description with its judge score; the title names the judge
    (:func:`judge_caption`)."""
    fig, axes = plt.subplots(len(examples), 2, figsize=(9, 3 * len(examples)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]})
    fig.suptitle(judge_caption(judge_name), fontsize=8)
    for row, e in zip(axes, examples):
        row[0].imshow(viz.to_numpy_image(e["image"]))
        row[0].set_title(f"{e['category']} ({e['kind']})", fontsize=9)
        row[0].axis("off")
        text = f"generated (score {e['score']:.0f} of 100):\n" + textwrap.fill(e["description"], 60)
        text += "\n\nground truth:\n" + textwrap.fill(e["truth"], 60)
        row[1].text(0, 1, text, va="top", fontsize=8, family="monospace")
        row[1].axis("off")
    fig.tight_layout()
    return fig
