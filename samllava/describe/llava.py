"""The describer: LLaVA fed with its own image features and the SASA tokens (Sec. 3.3-3.4, Eq. 10).

The input sequence of the language model is the conversation template of
:mod:`samllava.describe.template` with its placeholders filled in embedding space::

    [system] USER: <image> x n_img  <sasa> x (g*g + N_t) \\n question ASSISTANT: answer </s>
                   ^ LLaVA's projected CLIP features  ^ X_llava from SASA (Eq. 7-8)

:func:`samllava.describe.build.build_describer` builds one from a profile.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from transformers import (
    LlavaForConditionalGeneration,
    PreTrainedTokenizerBase,
)
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from samllava.data.instructions import GENERIC_OBJECT, QUESTION
from samllava.describe.lookup_decode import MAX_DRAFT, lookup_greedy
from samllava.describe.template import IMAGE_TOKEN, SASA_TOKEN, SYSTEM, build_example, build_prompt, check_length
from samllava.core.timing import phase

IGNORE_INDEX = -100  # label of the positions that Eq. 10 does not sum over


class Describer(nn.Module):
    """LLaVA plus its tokenizer, taking the SASA tokens as extra input embeddings.

    Args:
        model: a ``LlavaForConditionalGeneration`` (or a peft model wrapping one, see
            :mod:`samllava.describe.lora`) whose tokenizer already holds ``<image>`` and ``<sasa>``.
        tokenizer: its tokenizer.
        base_id: identity of the base weights (weight id + architecture digest); LoRA adapters
            record it so that an adapter is never loaded onto another base model.
        system: system message of the template.
        max_new_tokens: default generation length.
        vision_grid: None: LLaVA's CLIP tower reads pixels. An int g: the visual input is already
            features (B, g*g, C) (pooled from the frozen few-shot backbone, ``llm.vision =
            "fewshot_backbone"``) that LLaVA's projector alone maps to the language model.
    """

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, *, base_id: str,
                 system: str = SYSTEM, max_new_tokens: int = 128, vision_grid: int | None = None) -> None:
        super().__init__()
        self.vision_grid = vision_grid
        self.model = model
        self.tokenizer = tokenizer
        self.base_id = base_id
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.lookup_draft = MAX_DRAFT  # tokens drafted per pass when decoding one image (0: plain generate)
        self.phrasebook: list[str] = []  # texts the answers follow (set_phrasebook)
        self._book_ids: np.ndarray | None = None
        self.image_token_id = token_id(tokenizer, IMAGE_TOKEN)
        self.sasa_token_id = token_id(tokenizer, SASA_TOKEN)
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the describer's tokenizer needs an eos and a pad token")
        # CLIP normalisation, applied inside so that callers pass pixels in [0, 1]
        self.register_buffer("pixel_mean", torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1), persistent=False)

    # ----------------------------------------------------------------- properties
    @property
    def llava(self) -> LlavaForConditionalGeneration:
        """The LLaVA model itself (under a peft wrapper once LoRA is applied)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def image_size(self) -> int:
        return self.llava.config.vision_config.image_size

    @property
    def n_image_tokens(self) -> int:
        """Image-feature positions per image: (side / patch)^2, plus the class token for strategy "full"
        (g^2 with backbone features)."""
        if self.vision_grid is not None:
            return self.vision_grid**2
        cfg = self.llava.config
        n = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
        return n + (cfg.vision_feature_select_strategy == "full")

    @property
    def llm_dim(self) -> int:
        return self.llava.config.text_config.hidden_size

    @property
    def max_positions(self) -> int:
        return self.llava.config.text_config.max_position_embeddings

    # ----------------------------------------------------------------- inputs
    def image_features(self, visual: Tensor) -> Tensor:
        """(B, 3, s, s) pixels in [0, 1] -> (B, n_image_tokens, llm_dim) projected CLIP features; or, with
        ``vision_grid``, backbone features (B, g*g, C) -> projected by LLaVA's projector alone."""
        if self.vision_grid is not None:
            if visual.ndim != 3 or visual.shape[1] != self.n_image_tokens:
                raise ValueError(f"visual must be backbone features (B, {self.n_image_tokens}, C), "
                                 f"got {tuple(visual.shape)}")
            projector = self.llava.model.multi_modal_projector
            return projector(visual.to(projector.linear_1.weight.dtype))
        s = self.image_size
        if visual.ndim != 4 or tuple(visual.shape[1:]) != (3, s, s):
            raise ValueError(f"visual must be (B, 3, {s}, {s}) in [0, 1], got {tuple(visual.shape)}")
        if visual.numel() and (visual.min() < 0 or visual.max() > 1):
            raise ValueError("visual must lie in [0, 1] (CLIP normalisation is applied inside the describer)")
        x = (visual - self.pixel_mean) / self.pixel_std
        x = x.to(self.llava.dtype)
        feats = self.llava.model.get_image_features(pixel_values=x).pooler_output  # list of (n_img, D)
        return torch.stack(list(feats))

    @torch.no_grad()
    def phrase_embeddings(self, phrases: list[str]) -> Tensor:
        """(len(phrases), llm_dim): the mean input embedding of each phrase's tokens, tokenised as it reads
        inside a sentence (with a leading space)."""
        table = self.llava.get_input_embeddings().weight
        return torch.stack([table[self._token_ids(f" {p.strip()}")].mean(0) for p in phrases])

    def _token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _encode(self, prompt: str, completion: str | None, extra: int = 0) -> tuple[list[int], list[int]]:
        """Token ids of ``<bos> prompt [completion]`` and of the completion alone."""
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        prompt_ids = bos + self._token_ids(prompt)
        answer_ids: list[int] = []
        if completion is not None:
            # Tokenise the whole turn so the answer's first token is the one generation sees after the
            # prompt; fall back to separate tokenisation where a merge crosses the boundary.
            full = bos + self._token_ids(prompt + completion)
            answer_ids = (
                full[len(prompt_ids) :] if full[: len(prompt_ids)] == prompt_ids else self._token_ids(completion)
            )
        check_length(len(prompt_ids) + len(answer_ids) + extra, self.max_positions, prompt + (completion or ""))
        return prompt_ids, answer_ids

    def _check_batch(
        self, visual: Tensor, sasa_tokens: Tensor | None, questions: list[str], answers: list[str] | None
    ) -> int:
        b = visual.shape[0]
        if len(questions) != b or (answers is not None and len(answers) != b):
            raise ValueError(
                f"batch of {b} images but {len(questions)} questions"
                + ("" if answers is None else f" and {len(answers)} answers")
            )
        if sasa_tokens is not None and (
            sasa_tokens.ndim != 3 or sasa_tokens.shape[0] != b or sasa_tokens.shape[2] != self.llm_dim
        ):
            raise ValueError(f"sasa_tokens must be (B={b}, N, llm_dim={self.llm_dim}), got {tuple(sasa_tokens.shape)}")
        return 0 if sasa_tokens is None else sasa_tokens.shape[1]

    def _inputs_embeds(self, ids: Tensor, visual: Tensor, sasa_tokens: Tensor | None) -> Tensor:
        """(B, L) ids -> (B, L, D) embeddings with image features and SASA tokens at their placeholders."""
        embeds = self.llava.get_input_embeddings()(ids)  # (B, L, D)
        img = self.image_features(visual).to(embeds.dtype)  # (B, n_img, D)
        # masked_scatter fills the placeholders row by row, in order: each row holds exactly its own tokens
        embeds = embeds.masked_scatter((ids == self.image_token_id)[..., None].expand_as(embeds), img)
        if sasa_tokens is not None and sasa_tokens.shape[1]:
            embeds = embeds.masked_scatter(
                (ids == self.sasa_token_id)[..., None].expand_as(embeds), sasa_tokens.to(embeds.dtype)
            )
        return embeds

    def _prompt(self, question: str, n_sasa: int) -> str:
        return build_prompt(question, self.n_image_tokens, n_sasa, system=self.system)

    # ----------------------------------------------------------------- training
    def _teacher_forced(self, visual: Tensor, sasa_tokens: Tensor | None, questions: list[str],
                        answers: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        """Right-padded input embeddings (B, L, D), attention mask (B, L) and labels (B, L): the answer
        tokens (and eos) where Eq. 10 sums, -100 elsewhere."""
        n_sasa = self._check_batch(visual, sasa_tokens, questions, answers)
        rows = []
        for q, a in zip(questions, answers):
            prompt, completion = build_example(
                q, a, self.n_image_tokens, n_sasa, eos_token=self.tokenizer.eos_token, system=self.system
            )
            rows.append(self._encode(prompt, completion))
        length = max(len(p) + len(a) for p, a in rows)
        device = visual.device
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        labels = torch.full_like(ids, IGNORE_INDEX)
        mask = torch.zeros_like(ids)
        for i, (p, a) in enumerate(rows):
            n = len(p) + len(a)
            ids[i, :n] = torch.tensor(p + a, device=device)
            labels[i, len(p):n] = torch.tensor(a, device=device)
            mask[i, :n] = 1
        return self._inputs_embeds(ids, visual, sasa_tokens), mask, labels

    def answer_lengths(self, questions: list[str], answers: list[str], n_sasa: int) -> list[int]:
        """How many tokens Eq. 10 averages over for each example (the completion and its eos), as
        :meth:`loss` labels them: what weighs the parts of a batch split across processes or micro-batches."""
        return [len(self._encode(*build_example(q, a, self.n_image_tokens, n_sasa, eos_token=self.tokenizer.eos_token,
                                                system=self.system))[1]) for q, a in zip(questions, answers)]

    def forward(self, visual: Tensor, sasa_tokens: Tensor | None, questions: list[str],
                answers: list[str]) -> LlavaCausalLMOutputWithPast:
        """Teacher-forced pass; returns the model output with ``loss`` (Eq. 10) and ``logits`` (B, L, V).

        Sequences are right-padded; labels are the answer tokens (and eos), -100 elsewhere.
        """
        embeds, mask, labels = self._teacher_forced(visual, sasa_tokens, questions, answers)
        return self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels)

    def loss(
        self, visual: Tensor, sasa_tokens: Tensor | None, questions: list[str], answers: list[str]
    ) -> Tensor:
        """L_gen (Eq. 10): cross-entropy of the answer tokens, averaged over them (scalar).

        The same value as ``forward(...).loss``, but the vocabulary projection runs only at the
        positions that predict an answer token: the prompt (image, SASA and question tokens) is about
        half of each sequence, and (B, L, V) logits over a 49k vocabulary are a large share of a CPU
        training step.
        """
        embeds, mask, labels = self._teacher_forced(visual, sasa_tokens, questions, answers)
        hidden = self.llava.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # (B, L, D)
        target = labels[:, 1:]  # position t predicts token t + 1
        keep = target != IGNORE_INDEX
        logits = self.llava.lm_head(hidden[:, :-1][keep])  # (n_answer_tokens, V)
        return torch.nn.functional.cross_entropy(logits.float(), target[keep])

    # ----------------------------------------------------------------- inference
    @phase("decoding")
    def generate(self, visual: Tensor, sasa_tokens: Tensor | None, questions: list[str],
                 max_new_tokens: int | None = None, prefixes: list[str] | None = None) -> list[str]:
        """Greedy answers, one string per image; each stops at eos or after ``max_new_tokens``.

        ``prefixes`` (one per image, e.g. " Yes,"): the start of the assistant's turn, given rather than
        generated; the answer is the prefix and what the model writes after it."""
        out = self.generate_ids(visual, sasa_tokens, questions, max_new_tokens, prefixes)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        if prefixes is not None:
            texts = [p + t for p, t in zip(prefixes, texts)]
        return [t.strip() for t in texts]

    def _left_padded(self, questions: list[str], n_sasa: int, extra: int, device,
                     prefixes: list[str] | None = None) -> tuple[Tensor, Tensor]:
        """(B, L) prompt ids (with the assistant's ``prefixes``, if any) and attention mask, left-padded:
        every row's last prompt token sits at the end."""
        prompts = []
        for k, q in enumerate(questions):
            prompt, given = self._encode(self._prompt(q, n_sasa), None if prefixes is None else prefixes[k],
                                         extra=extra)
            prompts.append(prompt + given)
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, length - len(p):] = torch.tensor(p, device=device)
            mask[i, length - len(p):] = 1
        return ids, mask

    def answer_token_id(self, word: str) -> int:
        """The first token of an answer starting with ``word`` (e.g. "Yes"), as the completion is tokenised
        after a question (the answer follows the template's "ASSISTANT:", whatever the question)."""
        prompt = self._prompt(QUESTION.format(category=GENERIC_OBJECT), 0)
        return self._encode(prompt, f" {word},")[1][0]

    @torch.no_grad()
    @phase("decoding")
    def yes_no_log_odds(self, visual: Tensor, sasa_tokens: Tensor | None, questions: list[str]) -> Tensor:
        """(B,) log p(Yes) - log p(No) of the answer's first token: a continuous score behind Table 5's
        yes/no rule (greedy decoding answers "yes" when it is positive, if those are the top two tokens)."""
        n_sasa = self._check_batch(visual, sasa_tokens, questions, None)
        ids, mask = self._left_padded(questions, n_sasa, 1, visual.device)
        was_training = self.training
        self.eval()
        try:
            logits = self.model(
                inputs_embeds=self._inputs_embeds(ids, visual, sasa_tokens), attention_mask=mask
            ).logits[:, -1]
        finally:
            self.train(was_training)
        logp = logits.float().log_softmax(-1)
        return logp[:, self.answer_token_id("Yes")] - logp[:, self.answer_token_id("No")]

    def set_phrasebook(self, texts: list[str]) -> None:
        """Texts whose wording the answers follow (the training answers: :func:`samllava.train.train` sets them and the
        checkpoint keeps them). Decoding one image drafts from them (:mod:`.lookup_decode`); they never
        change what is generated, only how many passes it takes."""
        self.phrasebook = sorted(set(texts))
        eos = [self.tokenizer.eos_token_id]
        ids = [t for text in self.phrasebook for t in self._token_ids(f" {text}") + eos]  # as after "ASSISTANT:"
        self._book_ids = np.asarray(ids, dtype=np.int64) if ids else None

    @torch.no_grad()
    def generate_ids(self, visual: Tensor, sasa_tokens: Tensor | None, questions: list[str],
                     max_new_tokens: int | None = None, prefixes: list[str] | None = None) -> Tensor:
        """Greedy new token ids (B, <= max_new_tokens) after the prompt (and ``prefixes``); rows that stopped
        early are padded after eos.

        A batch of one image is decoded with up to :attr:`lookup_draft` tokens drafted from its own text per
        pass (:func:`samllava.describe.lookup_decode.lookup_greedy`: greedy decoding's tokens in fewer
        passes); a larger batch, or ``lookup_draft`` 0, with ``generate``."""
        n_sasa = self._check_batch(visual, sasa_tokens, questions, None)
        max_new = max_new_tokens or self.max_new_tokens
        ids, mask = self._left_padded(questions, n_sasa, max_new, visual.device, prefixes)
        was_training = self.training
        self.eval()  # no (LoRA) dropout while decoding
        try:
            if self.lookup_draft and len(questions) == 1:
                llava = self.llava
                return lookup_greedy(llava.model.language_model, llava.lm_head, llava.get_input_embeddings(),
                                     self._inputs_embeds(ids, visual, sasa_tokens), ids[0].tolist(), max_new,
                                     self.tokenizer.eos_token_id, suppress=(self.image_token_id, self.sasa_token_id),
                                     max_draft=self.lookup_draft, book=self._book_ids)
            # (B, <= max_new): with inputs_embeds only, generate returns the new tokens alone
            out = self.llava.generate(
                inputs_embeds=self._inputs_embeds(ids, visual, sasa_tokens), attention_mask=mask,
                max_new_tokens=max_new, do_sample=False,
                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                suppress_tokens=[self.image_token_id, self.sasa_token_id],  # placeholders are never text
            )
        finally:
            self.train(was_training)
        return out


# --------------------------------------------------------------------- tokens
def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of a special token that the tokenizer encodes as one token (an error otherwise)."""
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no single special token {token!r} (encodes to {ids})")
    return ids[0]
