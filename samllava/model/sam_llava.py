"""SAM-LLaVA assembled (Fig. 1): coarse (CLIP + memory) -> fine (SAM) -> SASA -> LLaVA.

Frozen (Sec. 3.5): the CLIP towers, SAM's image encoder, LLaVA's vision tower and projector, the
language model's base weights. Trainable: SAM's prompt encoder and mask decoder with the
multi-scale parts, SASA with its projections, and the LoRA adapters.

The costly frozen work is done once per image in :meth:`SamLlava.encode` (coarse maps, the SAM
embedding) and once per category for the text (:class:`samllava.coarse.TextCache`); training and
diagnosis then only run the cheap trainable parts on the cached :class:`Encoded` batch.

With a support set the coarse stage judges each image (:mod:`samllava.coarse.verdict`) and the
fine mask follows that verdict (:func:`gate_fine_mask`): empty on an image judged normal, SAM's mask
on one judged defective (M'_coarse where SAM returns nothing). The question the language model reads
starts with the facts measured from the image and that mask (its colour; the mask's size, shape, 3x3
position and contrast: :meth:`SamLlava.grounded_questions`), in training, evaluation and diagnosis
alike, and with ``llm.check_words`` the reported words are the model's only when those facts support
them (:meth:`SamLlava.words`): the words follow the evidence, never the ground truth.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samllava.coarse import CoarseLocalizer, CoarseOutput, TextCache, build_coarse, category_phrase
from samllava.coarse.backbone import pooled_tokens
from samllava.coarse.prompts import ANOMALOUS_STATES, GENERIC_PHRASE, NORMAL_STATES, TEMPLATES
from samllava.core.config import Profile
from samllava.data.instructions import GENERIC_OBJECT, QUESTION
from samllava.describe.build import build_describer
from samllava.describe.facts import Facts, measure_batch, subject_of
from samllava.describe.wording import checked_words, facts_sentence
from samllava.describe.llava import Describer
from samllava.describe.lora import apply_lora
from samllava.core.device import module_device, resolve_device, tower_dtype
from samllava.sam.losses import segmentation_loss
from samllava.metrics import parse_yes_no
from samllava.sam import SamCascade, SamOutput, build_cascade, place_cascade
from samllava.sam.prompts import resize_pad_mask
from samllava.describe.sasa import Sasa
from samllava.core.seeding import seeded, training_init_seed


@dataclass
class Encoded:
    """The frozen, once-per-image part of a batch of B images of side S."""

    images: torch.Tensor  # (B, 3, S, S) in [0, 1]
    coarse: CoarseOutput  # maps, Otsu mask (B, S, S), score (B,)
    embeddings: torch.Tensor  # (B, C, h, w) SAM image embeddings (Eq. 3)
    visual: torch.Tensor  # what LLaVA's image tokens read: (B, 3, s, s) pixels, or (B, g*g, C) backbone features
    text_tokens: torch.Tensor  # (1, N_t, D) CLIP text embeddings of the category (T_clip)

    def select(self, idx: torch.Tensor | slice) -> "Encoded":
        """The images ``idx`` of the batch (the category's text tokens are shared)."""
        return Encoded(self.images[idx], self.coarse.select(idx), self.embeddings[idx], self.visual[idx],
                       self.text_tokens)

    @staticmethod
    def cat(encs: list["Encoded"]) -> "Encoded":
        """Several batches of one category as one."""
        return Encoded(torch.cat([e.images for e in encs]), CoarseOutput.cat([e.coarse for e in encs]),
                       torch.cat([e.embeddings for e in encs]), torch.cat([e.visual for e in encs]),
                       encs[0].text_tokens)


@dataclass
class Losses:
    total: torch.Tensor  # Eq. 9: alpha * seg + gamma * gen
    seg: torch.Tensor  # Eq. 6
    gen: torch.Tensor  # Eq. 10
    branches: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Diagnosis:
    """What :meth:`SamLlava.diagnose` returns for one image (arrays at the input size)."""

    category: str
    score: float  # image anomaly score of the coarse stage (maximum of its decision map)
    heatmap: np.ndarray  # (S, S) the coarse map used (H or H')
    coarse_mask: np.ndarray  # (S, S) bool, M_coarse / M'_coarse
    fine_mask: np.ndarray  # (S, S) bool, M_fine (gated by the verdict)
    answer: str  # "yes" | "no" | "unclear", parsed from the generated text
    description: str  # the generated text
    terms: dict[str, str]  # which coarse terms were active, and the verdict's thresholds
    verdict: str = "not calibrated"  # "defective" | "normal" | "not calibrated" (no normal images given)
    thresholds: dict | None = None  # the verdict's thresholds, rule and number of normals behind them
    facts: Facts | None = None  # what the words may say, measured from the image and M_fine
    model_text: str = ""  # the language model's own text (``description`` when it passed the check)
    words_from: str = "language model"  # "language model", or "facts (...)" with why the model's text was not used


def total_loss(seg: torch.Tensor, gen: torch.Tensor, seg_weight: float = 1.0, gen_weight: float = 1.0) -> torch.Tensor:
    """Eq. 9: ``L_total = alpha L_seg + gamma L_gen`` (alpha = ``train.seg_weight``, gamma = ``train.gen_weight``;
    1.0 and 1.0 in the paper). L_seg is Eq. 6 (:func:`segmentation_loss`), L_gen Eq. 10
    (:meth:`samllava.describe.llava.Describer.loss`)."""
    return seg_weight * seg + gen_weight * gen


def gate_fine_mask(fine_mask: torch.Tensor, coarse: CoarseOutput) -> torch.Tensor:
    """M_fine as the words see it (B, S, S): empty where the verdict judged the image normal; SAM's mask
    where it judged it defective, or M'_coarse when SAM returns nothing there (the fine stage refines a
    detection, it never silently drops one). Unchanged without a verdict (zero-shot)."""
    if coarse.defective is None:
        return fine_mask
    flagged = coarse.defective.to(fine_mask.device)[:, None, None]
    empty = ~fine_mask.flatten(1).any(1)[:, None, None]
    return flagged & torch.where(empty, coarse.mask.to(fine_mask.device), fine_mask)


def state_tokens(prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """(N_states * N_templates, D) prompt embeddings -> (N_states, D): one text token per state word.

    SASA's T_clip: the template ensemble is averaged per state (normal and anomalous states), which
    keeps the language model's sequence short (12 tokens instead of hundreds of sentences).
    """
    n_states = len(NORMAL_STATES) + len(ANOMALOUS_STATES)
    t = prompt_embeddings.reshape(n_states, len(TEMPLATES), -1).mean(1)
    return F.normalize(t, dim=-1)


class SamLlava(nn.Module):
    """The whole method; see the module docstring for what is frozen and what learns."""

    def __init__(self, *, profile: Profile, coarse: CoarseLocalizer, cascade: SamCascade, sasa: Sasa,
                 describer: Describer) -> None:
        super().__init__()
        self.profile = profile
        self.coarse = coarse
        self.cascade = cascade
        self.sasa = sasa
        self.describer = describer
        self.text_cache = TextCache(coarse.zero_shot)
        self.coarse.requires_grad_(False)
        self.cascade.sam.image_encoder.requires_grad_(False)
        if self.cascade.encoder is not None:
            self.cascade.encoder.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        """Where the model runs (inputs are moved here where they enter: :meth:`encode`, :meth:`set_support`)."""
        return module_device(self)

    # ------------------------------------------------------------------ parameters
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Sec. 3.5: SAM prompt encoder + mask decoder (+ multi-scale), SASA, LoRA."""
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in names}

    def load_trainable_state(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        own = {n: p for n, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"{source}: does not fit this model (profile {self.profile.name!r}): "
                             f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")
        for n, p in own.items():
            if p.shape != state[n].shape:
                raise ValueError(f"{source}: {n} has shape {tuple(state[n].shape)}, the model expects {tuple(p.shape)}")
            with torch.no_grad():
                p.copy_(state[n])

    # ------------------------------------------------------------------ frozen part
    def phrase(self, category: str | None) -> str:
        """The category as the question and CLIP's prompts name it: a data set's own phrase (``metal_nut`` ->
        "metal nut"), else the user's words (``--category "brick wall"``); the generic object without one."""
        if category is None or not category.strip():
            return GENERIC_OBJECT
        known = category_phrase(category, allow_generic=True)
        return known if known != GENERIC_PHRASE else category.replace("_", " ").strip()

    def text(self, category: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(2, D) state features for Eq. 1 and (1, N_states, D) text tokens T_clip for SASA, cached."""
        phrase = self.phrase(category)
        return self.text_cache.get(phrase), state_tokens(self.text_cache.tokens(phrase))[None]

    @torch.no_grad()
    def encode(self, images: torch.Tensor, category: str | None) -> Encoded:
        """Frozen work for a batch (B, 3, S, S) in [0, 1]: coarse maps and masks, SAM embeddings.

        Where SAM's encoder is the few-shot backbone's stand-in, the backbone runs once and both
        stages read its features."""
        images = images.to(self.device)
        feats, tokens = self.text(category)
        encoder, grid = self.cascade.encoder, self.describer.vision_grid
        maps = self.coarse.calibrator.extractor(images) if encoder is not None or grid is not None else None
        if maps is not None and self.coarse.has_support:
            coarse = self.coarse.forward_features(images, feats, maps)
        else:
            coarse = self.coarse(images, feats)
        embedded = encoder.from_maps(maps) if encoder is not None else self.cascade.embed(images)
        if grid is not None:
            visual = pooled_tokens(maps, grid)
        else:
            side = self.describer.image_size
            visual = F.interpolate(images.float(), size=(side, side), mode="bilinear", align_corners=False,
                                   antialias=True).clamp(0, 1).to(images.dtype)  # antialias has no bf16 CPU kernel
        return Encoded(images, coarse, embedded, visual, tokens)

    def set_support(self, support: torch.Tensor | Sequence | None,
                    calibration: torch.Tensor | Sequence | None = None) -> None:
        """K normal images (K, 3, S, S) for the few-shot path (Eq. 2), or None for zero-shot; a sequence
        of such images (:class:`samllava.data.ImageFiles`) is read in chunks onto the model's device.
        ``calibration``: other normal images that calibrate the verdict (default: the support's own)."""
        if support is None:
            self.coarse.clear_support()
        else:
            self.coarse.set_support(support, calibration)

    # ------------------------------------------------------------------ trainable part
    def fine(self, enc: Encoded) -> SamOutput:
        """Eq. 3-4 on cached embeddings; ``mask`` is M_fine gated by the verdict (:func:`gate_fine_mask`),
        the logits are SAM's own."""
        out = self.cascade(enc.embeddings, enc.coarse.mask, enc.images.shape[-1])
        return replace(out, mask=gate_fine_mask(out.mask, enc.coarse))

    def align(self, enc: Encoded, fine: SamOutput, straight_through: bool = False) -> torch.Tensor:
        """SASA tokens X_llava (B, N, llm_dim) from F_sam masked by M_fine (Eq. 7-8).

        In training the hard mask is passed with a straight-through gradient (the forward value is
        the binary M_fine; the backward pass uses sigmoid(logits)), so L_gen also reaches SAM.
        """
        mask = fine.mask.float()
        if straight_through:
            prob = torch.sigmoid(fine.logits)
            mask = mask + prob - prob.detach()
        return self.align_mask(enc, mask)

    def align_mask(self, enc: Encoded, mask: torch.Tensor) -> torch.Tensor:
        """SASA tokens (B, N, llm_dim) for any mask (B, S, S) in the role of M_fine, e.g. the ground truth."""
        feats = self.cascade.image_embedding(enc.embeddings)  # F_sam (through the stand-in's adapter, if any)
        return self.sasa(feats, mask.float(), enc.text_tokens.to(feats.dtype)).tokens

    @staticmethod
    def facts(images: torch.Tensor, mask: torch.Tensor, questions: list[str]) -> list[Facts]:
        """What each image's words may say (:mod:`samllava.describe.facts`): images (B, 3, S, S), the mask the
        words describe (B, S, S) and the subject each question names."""
        if mask.shape[0] != len(questions) or images.shape[0] != len(questions):
            raise ValueError(f"{len(questions)} questions for {images.shape[0]} images and {mask.shape[0]} masks")
        return measure_batch(images.detach().float().cpu().numpy(), (mask.detach() > 0.5).cpu().numpy(),
                             [subject_of(q) for q in questions])

    def grounded_questions(self, questions: list[str], facts: list[Facts]) -> list[str]:
        """The questions as the language model reads them: each preceded by its facts in words
        (:func:`~samllava.describe.wording.facts_sentence`), as grounded VLMs give regions as text, so the
        model names them by copying real tokens from its context. The facts come from the image and the
        predicted M_fine, never from the ground truth."""
        return [facts_sentence(f) + " " + q for f, q in zip(facts, questions)]

    def forward(self, enc: Encoded, gt_masks: torch.Tensor, questions: list[str], answers: list[str]) -> Losses:
        """Eq. 9 on a cached batch: gt_masks (B, S, S) {0,1}; the question/answer texts of each image."""
        fine = self.fine(enc)
        ms = self.profile.multiscale
        seg, branches = segmentation_loss(
            fine.kept_branches(), self._gt_frame(gt_masks), ms.branch_weights, ms.focal_weight
        )
        tokens = self.align(enc, fine, straight_through=True)
        questions = self.grounded_questions(questions, self.facts(enc.images, fine.mask, questions))
        gen = self.describer.loss(enc.visual, tokens, questions, answers)
        t = self.profile.train
        return Losses(total=total_loss(seg, gen, t.seg_weight, t.gen_weight), seg=seg, gen=gen, branches=branches)

    def _gt_frame(self, gt: torch.Tensor) -> torch.Tensor:
        """Ground truth in SAM's padded input frame (B, 1, side, side), where the branch logits live."""
        return resize_pad_mask(gt.float(), self.cascade.sam.image_encoder.img_size)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def diagnose(self, images: torch.Tensor, category: str | None = None, support: torch.Tensor | None = None,
                 max_new_tokens: int | None = None) -> list[Diagnosis]:
        """Score, heatmap, coarse and fine masks, yes/no answer and description for each image.

        ``category`` None uses a generic object name; ``support`` None runs the zero-shot path.
        """
        self.set_support(support)
        return self.diagnose_with_support(images, category, max_new_tokens)

    def answer_prefixes(self, enc: Encoded) -> list[str] | None:
        """The answers' given start, " Yes," or " No," from the calibrated verdict (``llm.answer_from_verdict``
        with a support set), else None (the language model answers by itself)."""
        defective = enc.coarse.defective
        if not self.profile.llm.answer_from_verdict or defective is None:
            return None
        return [" Yes," if d else " No," for d in defective.tolist()]

    @torch.no_grad()
    def diagnose_with_support(self, images: torch.Tensor, category: str | None = None,
                              max_new_tokens: int | None = None) -> list[Diagnosis]:
        """:meth:`diagnose` with the support set already given (:meth:`set_support`): many batches, one fit."""
        if images.ndim == 3:
            images = images[None]
        enc = self.encode(images, category)
        fine = self.fine(enc)
        tokens = self.align(enc, fine)
        asked = [QUESTION.format(category=self.phrase(category))] * images.shape[0]
        facts = self.facts(enc.images, fine.mask, asked)
        texts = self.describer.generate(enc.visual, tokens, self.grounded_questions(asked, facts),
                                        max_new_tokens=max_new_tokens, prefixes=self.answer_prefixes(enc))
        c = enc.coarse
        thresholds = None if c.verdict is None else c.verdict.to_dict()
        out = []
        for i, (text, f) in enumerate(zip(texts, facts)):
            words, source = self.words(text, f)
            said = parse_yes_no(words)
            verdict = "not calibrated" if c.defective is None else ("defective" if c.defective[i] else "normal")
            out.append(Diagnosis(
                category=category or GENERIC_OBJECT, score=float(c.score[i]),
                heatmap=c.calibrated[i].float().cpu().numpy(), coarse_mask=c.mask[i].cpu().numpy(),
                fine_mask=fine.mask[i].cpu().numpy(), answer={True: "yes", False: "no", None: "unclear"}[said],
                description=words, terms=c.terms, verdict=verdict, thresholds=thresholds, facts=f,
                model_text=text, words_from=source))
        return out

    def words(self, text: str, facts: Facts) -> tuple[str, str]:
        """The words a diagnosis reports and where they came from: with ``llm.check_words`` the model's text
        when the facts support every claim of it, else the facts' own sentences
        (:func:`~samllava.describe.wording.checked_words`); without, the model's text as it is."""
        return checked_words(text, facts) if self.profile.llm.check_words else (text, "language model")


def build_model(profile: Profile, lora: bool = True, seed: int = 0, device: str | torch.device | None = None,
                dtype: str | torch.dtype | None = None, init_device: str | torch.device | None = "cpu") -> SamLlava:
    """The profile's SAM-LLaVA: weights resolved per component (random only where the profile allows).

    Random initialisation is seeded per component by ``seed`` (without touching the global RNG,
    :mod:`samllava.core.seeding`), so that the frozen random parts of the tiny and offline profiles
    (CLIP, SAM's encoder and its positional buffers, LLaVA's vision tower) are the same in every
    process and in every builder (``build_cascade(profile, seed)`` gives this model's cascade): a
    checkpoint of the trainable parts then fully determines the model. The parts that learn (and the
    random stand-ins built with them) are drawn from ``seed`` offset by the training seed
    ``profile.train.seed`` (:func:`samllava.core.seeding.training_init_seed`); the coarse stage from ``seed``.

    ``device`` (:func:`samllava.core.device.resolve_device`; None: CUDA when available) is where the model
    runs. It is built on ``init_device`` (the CPU: the seeded random parts are then the same whatever the
    device; None: the current default device) and moved there once. ``dtype`` None gives the frozen
    towers the profile's GPU dtypes on a GPU and float32 on the CPU (:func:`samllava.core.device.tower_dtype`);
    a dtype forces it on SAM's image encoder and LLaVA on any device.
    """
    dev = resolve_device(device)
    with torch.device(init_device) if init_device is not None else nullcontext():
        model = _assemble(profile, lora, seed, tower_dtype(profile.llm.dtype, dev, dtype))
    place_cascade(model.cascade, profile, dev, dtype)
    return model.to(dev)


def _assemble(profile: Profile, lora: bool, seed: int, llm_dtype: torch.dtype) -> SamLlava:
    coarse, _ = build_coarse(profile, seed=seed)
    cascade = build_cascade(profile, seed=seed, extractor=coarse.calibrator.extractor)
    extractor = coarse.calibrator.extractor
    width = pooled_tokens(extractor(torch.zeros(1, 3, 8, 8, device=extractor.preprocess.mean.device)), 1).shape[-1] \
        if profile.llm.vision == "fewshot_backbone" else None
    init = training_init_seed(seed, profile.train.seed)  # the parts that learn (seeding.training_init_seed)
    describer = build_describer(profile, seed=init, vision_channels=width, dtype=llm_dtype)
    if lora:
        with seeded(init, "lora"):
            describer = apply_lora(describer, profile.lora)
    else:  # the parts frozen under LoRA stay frozen without it (samllava.model.checkpoint.load_model folds LoRA in)
        describer.llava.requires_grad_(False)
    if describer.vision_grid is not None:  # a new projector for the backbone's features learns (LLaVA's stage 1)
        describer.llava.model.multi_modal_projector.requires_grad_(True)
    text_dim = coarse.zero_shot.model.visual.output_dim  # CLIP's joint embedding width D
    with seeded(init, "sasa"):
        sasa = Sasa(
            profile.sasa, vis_dim=cascade.sam.prompt_encoder.embed_dim, text_dim=text_dim, llm_dim=describer.llm_dim
        )
    sasa.set_cell_words(describer.phrase_embeddings(sasa.cell_position_names()).float())
    return SamLlava(profile=profile, coarse=coarse, cascade=cascade, sasa=sasa, describer=describer)
