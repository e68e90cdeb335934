"""Answering from cached examples, and the description metrics built on the answers.

:func:`answer` generates the text and :func:`answer_log_odds` reads the first token's yes/no
log-odds, both from :func:`samllava.model.encoded_data.prepare`'s cached frozen part. The evaluations score
them: :func:`description_eval` (Table 5's yes/no rule, :func:`samllava.metrics.description_accuracy`,
and position accuracy), :func:`log_odds_eval` (AUROC of the log-odds) and :func:`position_baselines`
(guesses that ignore the image, and M_fine's own position).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from samllava import metrics
from samllava.core.batching import BatchSizer
from samllava.data import CategoryData, balanced_subset
from samllava.data.instructions import NO_POSITION, POSITIONS, parse_position, position_on_grid
from samllava.core.device import CPU, to_device
from samllava.model.encoded_data import Examples, prepare
from samllava.model.sam_llava import SamLlava


@torch.no_grad()
def _aligned(model: SamLlava, ex: Examples, i: int, j: int, oracle_masks: bool = False):
    """Examples ``i:j`` of one category on the model's device: (cached frozen part, SASA tokens, questions).
    ``oracle_masks``: the ground-truth mask stands in for M_fine (what a perfect SAM would give)."""
    sel = torch.arange(i, j, device=CPU)
    enc = to_device(ex.enc.select(sel), model.device)
    mask = ex.gt[sel].to(model.device) > 0.5 if oracle_masks else model.fine(enc).mask
    questions = [ex.questions[k] for k in sel.tolist()]
    return enc, model.align_mask(enc, mask), model.grounded_questions(questions, model.facts(enc.images, mask,
                                                                                             questions))


def _sizer(model: SamLlava, batch_size: int) -> BatchSizer:
    """Language-model batches: ``batch_size`` on the CPU, as many as fit on a GPU (or ``gpu.describe_batch``)."""
    gpu = model.profile.gpu
    return BatchSizer(model.device, batch_size, gpu.describe_batch, gpu.memory_fraction)


def _spans(examples: list[Examples], start: int, stop: int):
    """(example, i, j) for the rows ``start:stop`` of ``examples`` laid end to end: one span per category touched."""
    offset = 0
    for ex in examples:
        i, j = max(start - offset, 0), min(stop - offset, len(ex))
        if i < j:
            yield ex, i, j
        offset += len(ex)


def answer(model: SamLlava, examples: list[Examples], batch_size: int = 24, max_new_tokens: int | None = None,
           progress: bool = True, oracle_masks: bool = False) -> list[list[str]]:
    """Generated answers for every example (per category), from the cached frozen part.

    Batches run across categories: the frozen part, M_fine and the SASA tokens are computed per category
    (they read its text features), then the rows of several categories are decoded together. On a CPU each
    decoding step streams all of the language model's weights from memory whatever the batch, so a step
    costs about the same for 4 rows as for 24 (docs/decisions.md); the answers are the same strings."""
    model.eval()
    sizer = _sizer(model, batch_size)
    bounds = np.cumsum([0] + [len(ex) for ex in examples])  # each category's rows in the flat order

    def texts(start: int, stop: int) -> list[str]:
        visual, tokens, questions, prefixes = [], [], [], []
        for ex, i, j in _spans(examples, start, stop):
            enc, sasa, qs = _aligned(model, ex, i, j, oracle_masks)
            visual.append(enc.visual)
            tokens.append(sasa)
            questions += qs
            prefixes.append(model.answer_prefixes(enc))
        given = None if prefixes[0] is None else [p for part in prefixes for p in part]
        out = model.describer.generate(torch.cat(visual), None if tokens[0] is None else torch.cat(tokens), questions,
                                       max_new_tokens=max_new_tokens, prefixes=given)
        bar.update(len(out))
        return out

    with tqdm(total=int(bounds[-1]), desc="describe", unit="image", disable=not progress) as bar:
        flat = [t for batch in sizer.run(int(bounds[-1]), texts) for t in batch]
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@torch.no_grad()
def answer_log_odds(
    model: SamLlava, examples: list[Examples], batch_size: int = 16, oracle_masks: bool = False
) -> np.ndarray:
    """First-token yes/no log-odds of every example, concatenated in order (:meth:`Describer.yes_no_log_odds`)."""
    model.eval()
    sizer = _sizer(model, batch_size)

    def odds(ex: Examples, i: int, j: int) -> torch.Tensor:
        enc, tokens, questions = _aligned(model, ex, i, j, oracle_masks)
        return model.describer.yes_no_log_odds(enc.visual, tokens, questions).cpu()

    out = [o for ex in examples for o in sizer.run(len(ex), lambda i, j, ex=ex: odds(ex, i, j))]
    return torch.cat(out).numpy() if out else np.zeros(0)


def description_eval(model, data: dict[str, CategoryData], shots: int = 1, seed: int = 0, image_size: int | None = None,
                     max_new_tokens: int | None = None, progress: bool = False,
                     per_label: int | None = None) -> tuple[pd.DataFrame, list[list[str]], list[Examples]]:
    """Yes/no accuracy (Table 5 rule) and position accuracy per category on held-out images
    (``per_label``: a balanced subset, :func:`balanced_subset`).

    Position accuracy: among anomalous images, the fraction whose answer names the right 3x3
    grid cell (chance is 1/9 for a uniform guess). Returns ``(table, answers, examples)``.
    """
    data = balanced_subset(data, per_label)
    examples = prepare(
        model, data, image_size or model.profile.data.image_size, shots=shots, seed=seed, progress=progress
    )
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
    ``oracle_masks``: the ground-truth mask stands in for M_fine, as in :func:`answer`."""
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
                    for m in (ex.gt > 0.5 if oracle_masks else _fine_masks(model, ex)).cpu().numpy()[idx]]
        out["from_m_fine"] = 100 * float(np.mean([s == t for s, t in zip(said, truth)]))
    return out


def _fine_masks(model: SamLlava, ex: Examples) -> torch.Tensor:
    """M_fine (N, S, S) of every cached example, on the CPU."""
    return model.fine(to_device(ex.enc, model.device)).mask.cpu()


def log_odds_eval(
    model, data: dict[str, CategoryData], shots: int = 1, seed: int = 0, per_label: int | None = None
) -> dict:
    """How well the answer's first token separates the classes, without decoding: AUROC of the
    yes/no log-odds (:func:`answer_log_odds`) and the accuracy of their sign, on a
    balanced subset of ``per_label`` images per label and category (None: all).

    With a support set it also gives, on the same images, the accuracy of the coarse stage's calibrated
    verdict, the best accuracy any threshold on the coarse score reaches on these labels (the oracle)
    and how often the answer agrees with the verdict (the words follow the evidence)."""
    examples = prepare(
        model, balanced_subset(data, per_label), model.profile.data.image_size, shots=shots, seed=seed, progress=False
    )
    labels = np.concatenate([ex.labels for ex in examples])
    odds = answer_log_odds(model, examples)
    out = {
        "yes_no_auroc": 100 * float(roc_auc_score(labels, odds)),
        "sign_accuracy": 100 * float(((odds > 0) == labels).mean()),
        "said_yes": 100 * float((odds > 0).mean()),
        "n": int(len(labels)),
    }
    if all(ex.enc.coarse.defective is not None for ex in examples):
        verdict = torch.cat([ex.enc.coarse.defective for ex in examples]).cpu().numpy()
        score = torch.cat([ex.enc.coarse.score for ex in examples]).double().cpu().numpy()
        out.update({"verdict_accuracy": 100 * float((verdict == labels).mean()),
                    "oracle_accuracy": 100 * metrics.oracle_accuracy(score, labels),
                    "answer_follows_verdict": 100 * float(((odds > 0) == verdict).mean())})
    return out
