"""Evaluation harness: one loop for every method, so baselines are measured, not copied.

``evaluate(...)`` runs a *method* over the test images of each category and each support seed and
returns per-category metrics with mean and std over seeds. A method is a callable
``(images (N,3,S,S), category, support (K,3,S,S) | None, calibration (n,3,S,S) | None) -> (maps (N,S,S),
scores (N,))``; ``calibration`` are normal training images beyond the support that calibrate the verdict
(:func:`samllava.data.fewshot.sample_calibration`; None: the support's own).
Every method lives here: :class:`CoarseMethod` (Eq. 1-2), :class:`KnnMethod` (the PatchCore-style
baseline), :class:`CascadeMethod` (Eq. 1-4) and :class:`FullMethod` (the whole trained model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from samllava import metrics
from samllava.core.batching import MEMORY_FRACTION, BatchSizer
from samllava.model.checkpoint import load_model
from samllava.coarse import TextCache, build_coarse, category_phrase
from samllava.coarse.memory import knn_map, knn_memory
from samllava.core.config import FewShotConfig, Profile
from samllava.data import CategoryData, support_images
from samllava.core.device import CPU, module_device, resolve_device
from samllava.core.distributed import broadcast, gather, shard, unshard, world
from samllava.core.memo import ContentMemo
from samllava.core.timing import phase
from samllava.model.sam_llava import SamLlava

Method = Callable[[torch.Tensor, str, "torch.Tensor | None", "torch.Tensor | None"],
                  "tuple[torch.Tensor, torch.Tensor]"]
METRICS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")


@dataclass
class CategoryResult:
    category: str
    per_seed: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        out = {}
        for name in self.per_seed[0]:
            vals = [r[name] for r in self.per_seed]
            mean, std = metrics.mean_std(vals)
            out[name], out[f"{name}_std"] = mean, std
        return out


@phase("metrics")
def score_category(maps: torch.Tensor | np.ndarray, scores, labels, masks, has_masks: bool,
                   answers: list[str] | None = None) -> dict[str, float]:
    """All metrics of one category; pixel metrics are NaN (not available) without masks."""
    maps = maps.numpy() if isinstance(maps, torch.Tensor) else maps
    scores = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    out = {"image_auroc": metrics.image_auroc(scores, labels), "f1_max": metrics.f1_max(scores, labels)}
    if has_masks:
        masks = masks.numpy() if isinstance(masks, torch.Tensor) else masks
        # one pass over the pixels serves both metrics (the histogram with regions holds AUROC's counts)
        hist = metrics.pixel_histogram(maps, masks, regions=True)
        out["pixel_auroc"], out["pixel_auroc_bound"] = hist.auroc_with_bound()
        out["aupro"], out["aupro_bound"] = hist.aupro_with_bound()
    else:
        out["pixel_auroc"] = out["aupro"] = out["pixel_auroc_bound"] = out["aupro_bound"] = math.nan
    if answers is not None:
        out["description_accuracy"] = metrics.description_accuracy(answers, labels)
    return out


def evaluate(method: Method, data: dict[str, CategoryData], *, shots: int = 0, seeds: tuple[int, ...] = (0,),
             image_size: int = 256, batch_size: int = 16, progress: bool = True,
             gpu_batch: int | None = None) -> dict[str, CategoryResult]:
    """Run ``method`` on every category (and every support seed when ``shots > 0``).

    Images go to the method's device (:func:`method_device`) ``batch_size`` at a time; on a GPU as many
    as fit in free memory, or ``gpu_batch`` (:class:`samllava.core.batching.BatchSizer`). Under ``torchrun``
    (an initialised process group) rank r scores the images i with ``i % world == r``
    (:func:`samllava.core.distributed.shard`); rank 0 gathers their maps and scores and computes the metrics
    exactly as one process does, and every rank returns them.
    """
    rank, world_size = world()
    device, setting, fraction = method_device(method)
    sizer = BatchSizer(device, batch_size, gpu_batch if gpu_batch is not None else setting, fraction)
    results: dict[str, CategoryResult] = {}
    seeds = seeds if shots > 0 else (seeds[0],)  # zero-shot has no support to vary
    bar = tqdm(total=len(data) * len(seeds), desc="evaluate", disable=not progress or rank != 0)
    for name, cat in data.items():
        if not cat.test:
            raise ValueError(f"category {name!r} at {cat.root}: no test images")
        images = cat.load_images([cat.test[i] for i in shard(len(cat.test), rank, world_size)], image_size)
        labels = np.array([s.label for s in cat.test])
        masks = cat.load_masks(cat.test, image_size)[:, 0] if cat.has_masks and rank == 0 else None
        res = CategoryResult(name)
        for seed in seeds:
            support, calibration = support_images(cat, shots, seed, image_size, _fewshot(method))
            outputs = gather(run_batched(method, images, name, support, sizer, calibration))
            if rank == 0:
                maps, scores = outputs[0] if world_size == 1 else _unshard_outputs(outputs, len(cat.test))
                res.per_seed.append(score_category(maps, scores, labels, masks, cat.has_masks))
            bar.update(1)
        results[name] = res
    bar.close()
    return broadcast(results)


def _fewshot(method: Method):
    """The few-shot settings behind a method's verdict (its profile's; a plain callable: no calibration normals)."""
    profile = getattr(method, "profile", None)
    return profile.fewshot if profile is not None else FewShotConfig(calibration=0)


def method_device(method: Method) -> tuple[torch.device, int | None, float]:
    """Where a method runs, its GPU batch setting and memory fraction: the package's methods say (their
    ``device`` and ``profile.gpu``); a plain callable gets its images on the CPU."""
    gpu = getattr(getattr(method, "profile", None), "gpu", None)
    return (getattr(method, "device", CPU), gpu.encode_batch if gpu else None,
            gpu.memory_fraction if gpu else MEMORY_FRACTION)


def _unshard_outputs(parts: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's (maps, scores) of its shard back in image order."""
    return tuple(torch.stack(unshard([list(p[k]) for p in parts], n)) for k in range(2))


@phase("evaluation inference")
def run_batched(method: Method, images: torch.Tensor, category: str, support, sizer: BatchSizer, calibration=None):
    """(maps (N, S, S), scores (N,)) of ``method`` on ``images``, on the CPU, in batches of ``sizer``."""
    device = sizer.device
    support = None if support is None else support.to(device)
    calibration = None if calibration is None else calibration.to(device)

    def batch(i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = method(images[i:j].to(device), category, support, calibration)
        return m.float().cpu(), s.float().cpu()

    out = sizer.run(len(images), batch)
    if not out:  # a rank without images (fewer images than processes)
        side = images.shape[-1]
        return torch.zeros(0, side, side, device=CPU), torch.zeros(0, device=CPU)
    return torch.cat([m for m, _ in out]), torch.cat([s for _, s in out])


def results_table(results: dict[str, CategoryResult], columns: tuple[str, ...] = METRICS, percent: bool = True):
    """Per-category table with the mean row (pixel metrics n/a where masks are absent)."""
    rows = {}
    for name, res in results.items():
        s = res.summary()
        rows[name] = {c: (100 * s[c] if percent else s[c]) for c in columns if c in s}
        if len(res.per_seed) > 1:
            rows[name].update(
                {f"{c}_std": (100 * s[f"{c}_std"] if percent else s[f"{c}_std"]) for c in columns if c in s}
            )
    return metrics.category_table(rows)


def results_json(results: dict[str, CategoryResult], **header) -> dict:
    """The report of ``samllava evaluate``: per category the summary and every seed's metrics, the means,
    and ``error_bounds``: the largest stated deviation of a histogram metric from its exact value
    (:mod:`samllava.metrics.pixel`) over all categories and seeds (NaN without masks)."""
    out = {**header, "categories": {}}
    for name, res in results.items():
        out["categories"][name] = {"summary": res.summary(), "per_seed": res.per_seed}
    table = results_table(results, percent=False)
    out["mean"] = {k: v for k, v in table.iloc[-1].to_dict().items() if k != "category"}
    out["error_bounds"] = {
        metric: float(np.nanmax(vals)) if not np.all(np.isnan(vals)) else math.nan
        for metric in ("pixel_auroc", "aupro")
        for vals in [np.array([r.get(f"{metric}_bound", math.nan) for c in results.values() for r in c.per_seed])]
    }
    return out


# --- methods -------------------------------------------------------------------------------------

class SupportKey:
    """Which support set (and calibration normals) a method was last fitted on, by tensor identity: the
    tensors are held, so no other tensor can take their identity."""

    def __init__(self) -> None:
        self._held: tuple | None = None

    def changed(self, support, calibration) -> bool:
        """True (and remembered) when ``support``/``calibration`` are not the tensors of the last call."""
        held = (support, calibration)
        same = self._held is not None and all(a is b for a, b in zip(held, self._held))
        self._held = held
        return not same


class CoarseMethod:
    """Stage 1 (Eq. 1-2) as a method: zero-shot map, or the calibrated map H' with support.

    Text features are computed once per category and the support memory once per support set.
    """

    def __init__(self, profile: Profile, coarse=None, device: str | torch.device | None = None):
        """``coarse`` None builds the profile's; ``device`` None keeps a given stage where it is and puts a
        built one on the default device (:func:`samllava.core.device.resolve_device`)."""
        self.profile = profile
        if coarse is None:
            with torch.device(CPU):  # built on the CPU (seeded random weights), then moved
                coarse = build_coarse(profile)[0]
            coarse = coarse.to(resolve_device(device))
        elif device is not None:
            coarse = coarse.to(resolve_device(device))
        self.coarse = coarse
        self.coarse.eval()
        self.text = TextCache(self.coarse.zero_shot)
        self._support = SupportKey()
        self.last_terms: dict[str, str] = {}

    @property
    def device(self) -> torch.device:
        return module_device(self.coarse)

    @torch.no_grad()
    def __call__(self, images, category, support, calibration=None):
        if self._support.changed(support, calibration):
            if support is None:
                self.coarse.clear_support()
            else:
                self.coarse.set_support(support, calibration)
        feats = self.text.get(category_phrase(category, allow_generic=True)) if self.coarse.zero_shot_active() else None
        out = self.coarse(images, feats)
        self.last_terms, self.last_output = out.terms, out
        return out.log_map, out.score  # same ranking as H', without float32 ties


class KnnMethod:
    """PatchCore-style k-NN baseline on the same few-shot backbone (1 - max cosine, mean over levels)."""

    def __init__(self, profile: Profile, extractor=None, device: str | torch.device | None = None):
        self.profile = profile
        if extractor is None:  # the few-shot backbone of the profile's coarse stage
            with torch.device(CPU):  # built on the CPU (seeded random weights), then moved
                extractor = build_coarse(profile)[0].calibrator.extractor
            extractor = extractor.to(resolve_device(device))
        elif device is not None:
            extractor = extractor.to(resolve_device(device))
        self.extractor = extractor.eval()
        self._key, self._memory = None, None

    @property
    def device(self) -> torch.device:
        return module_device(self.extractor)

    @torch.no_grad()
    def __call__(self, images, category, support, calibration=None):  # no verdict: calibration is not used
        if support is None:
            raise ValueError("the k-NN baseline needs support images (shots > 0)")
        if support.shape[-1] != images.shape[-1]:
            raise ValueError(f"query images are {images.shape[-1]} px but the support set is {support.shape[-1]} px")
        if support is not self._key:  # the memory is built once per support set, not per batch
            self._key, self._memory = support, knn_memory(self.extractor, support)  # holding it keeps identity unique
        return knn_map(self.extractor, self._memory, images)


def combined_map(calibrated: torch.Tensor, fine_logits: torch.Tensor) -> torch.Tensor:
    """The full model's pixel map (B, S, S): mean of H' and SAM's mask probability.

    The fine mask itself is binary; both terms lie in [0, 1] on a scale shared by all images (no
    per-image normalisation, which would break pixel AUROC across images).
    """
    return 0.5 * (calibrated + torch.sigmoid(fine_logits))


class CascadeMethod:
    """Coarse stage + SAM cascade (Eq. 1-4): map = mean of H' and P(M_fine), score from the coarse stage.

    Both terms lie in [0, 1] on a scale shared by all images, so pixel metrics stay comparable
    across images. ``last`` keeps the coarse and fine masks of the latest batch (for mask IoU).
    ``pixel_map="sam"`` scores SAM's own output instead: the map is SAM's mask logits (the ranking of
    P(M_fine) without float32 saturation), as Table 7's "w/o CLIP-SAM cascade" is defined.
    """

    def __init__(self, coarse: CoarseMethod, cascade, score: str = "coarse", embed=None, pixel_map: str = "combined"):
        """``embed``: a shared memo of SAM's image encoder (``ContentMemo(cascade.embed)``) for methods
        whose cascades share one frozen encoder (the ablation variants); by default one of its own.
        ``score``: "coarse" (the coarse stage's image score) or "map_max" (the maximum of the pixel map)."""
        if score not in ("coarse", "map_max"):
            raise ValueError(f"score must be 'coarse' or 'map_max', got {score!r}")
        if pixel_map not in ("combined", "sam"):
            raise ValueError(f"pixel_map must be 'combined' or 'sam', got {pixel_map!r}")
        self.coarse, self.cascade, self.score, self.pixel_map = coarse, cascade.eval(), score, pixel_map
        self.profile = coarse.profile
        # F_sam once per image batch, for every seed and K
        self.embed = embed if embed is not None else ContentMemo(self.cascade.embed, max_batches=32)
        self.last = None

    @property
    def device(self) -> torch.device:
        return module_device(self.cascade)

    @torch.no_grad()
    def __call__(self, images, category, support, calibration=None):
        _, score = self.coarse(images, category, support, calibration)
        out = self.coarse.last_output
        fine = self.cascade(self.embed(images), out.mask, images.shape[-1])
        self.last = (out.mask, fine.mask)
        maps = combined_map(out.calibrated, fine.logits) if self.pixel_map == "combined" else fine.logits
        return maps, (maps.flatten(1).amax(1) if self.score == "map_max" else score)


class FullMethod:
    """The whole model as an evaluation method: map = mean of H' and P(M_fine) (:func:`combined_map`);
    score from the coarse stage. ``model`` None loads the profile's model with ``checkpoint``."""

    def __init__(self, profile: Profile, checkpoint=None, model: SamLlava | None = None,
                 device: str | torch.device | None = None):
        self.profile = profile
        self.model = model if model is not None else load_model(profile, checkpoint, device=device)
        self._support = SupportKey()
        self.last_terms: dict[str, str] = {}

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def __call__(self, images, category, support, calibration=None):
        if self._support.changed(support, calibration):  # the memory is fitted once per support set
            self.model.set_support(support, calibration)
        enc = self.model.encode(images, category)
        fine = self.model.fine(enc)
        self.last_terms = enc.coarse.terms
        return combined_map(enc.coarse.calibrated, fine.logits), enc.coarse.score
