"""Greedy decoding of one answer that drafts its next tokens from the text so far (prompt-lookup decoding).

On a CPU at batch 1 a decoding step is bound by reading the language model's weights once per token
(docs/decisions.md): checking a dozen proposed tokens in one pass costs about two one-token passes.
The proposal costs nothing: the answer repeats words of its prompt (the region sentence names the position,
size and shape it describes), of its own first sentences and, above all, of the answers the model was
trained on (its phrasebook, kept in the checkpoint), so the tokens that followed the latest earlier
occurrence of the last few tokens are a good guess. The model's own greedy choice at every proposed
position decides what is kept, so the result is greedy decoding's: the same tokens as
``generate(do_sample=False)`` up to float rounding (a pass over several tokens sums in another order than
one token at a time; tests/describe/test_lookup_decode.py compares the two, benchmarks/bench_lookup_decode.py
measures both). The idea is Saxena's prompt lookup decoding, also in transformers as
``prompt_lookup_num_tokens``, which however drafts from ``input_ids`` alone and so cannot run on the
describer's input embeddings.
"""
from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor, nn

MAX_DRAFT = 12  # tokens proposed per pass: a pass over 2-13 tokens costs about 1.8 one-token passes here
MAX_NGRAM = 4  # the longest tail looked up
MIN_NGRAM = 2  # a one-token tail ("the", ",") recurs everywhere: its drafts are mostly rejected, so never drafted


def _continuation(source: np.ndarray, tail: np.ndarray, max_draft: int) -> list[int]:
    """The tokens after the latest occurrence of ``tail`` in ``source`` that has at least one token after it."""
    n = len(tail)
    if len(source) <= n:
        return []
    hits = np.flatnonzero((sliding_window_view(source[:-1], n) == tail).all(1))
    if not hits.size:
        return []
    start = int(hits[-1]) + n
    return source[start:start + max_draft].tolist()


def draft(history: list[int], book: np.ndarray | None = None, max_ngram: int = MAX_NGRAM,
          max_draft: int = MAX_DRAFT, min_ngram: int = MIN_NGRAM) -> list[int]:
    """Up to ``max_draft`` tokens proposed to follow ``history`` (the prompt and the answer so far).

    The last n tokens (n = ``max_ngram`` down to ``min_ngram``, the longest found wins) are looked up in
    ``history`` itself, then in ``book`` (token ids of texts the answers follow, e.g. the training answers:
    :meth:`samllava.describe.llava.Describer.set_phrasebook`); the draft is what followed the latest
    occurrence. [] when no tail recurs."""
    ids = np.asarray(history)
    for source in (ids, book):
        if source is None:
            continue
        for n in range(min(max_ngram, len(ids) - 1), min_ngram - 1, -1):
            found = _continuation(source, ids[-n:], max_draft)
            if found:
                return found
    return []


@torch.no_grad()
def lookup_greedy(lm: nn.Module, head: nn.Module, embed: nn.Module, prompt_embeds: Tensor, prompt_ids: list[int],
                  max_new: int, eos_token_id: int | None = None, suppress: tuple[int, ...] = (),
                  max_draft: int = MAX_DRAFT, book: np.ndarray | None = None) -> Tensor:
    """Greedy new token ids (1, <= max_new) after one prompt, ending at eos (included) or ``max_new``.

    Args:
        lm: the decoder stack (a transformers base model taking ``inputs_embeds`` and a KV cache).
        head: the output projection to the vocabulary.
        embed: the input embedding table (drafted and chosen tokens are fed as embeddings).
        prompt_embeds: (1, L, D) the prompt's input embeddings (placeholders filled).
        prompt_ids: the prompt's L token ids, where drafts are looked up (placeholder ids never match text).
        suppress: token ids never chosen (the placeholders), as ``generate(suppress_tokens=...)``.
        max_draft: tokens proposed per pass (0: plain greedy decoding, one pass per token).
        book: token ids of texts the answer is likely to follow, drafted from after its own text (:func:`draft`).
    """
    if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1 or prompt_embeds.shape[1] != len(prompt_ids):
        raise ValueError(f"prompt_embeds must be (1, L={len(prompt_ids)}, D), got {tuple(prompt_embeds.shape)}")
    device = prompt_embeds.device
    blocked = torch.tensor(list(suppress), dtype=torch.long, device=device)

    def choose(hidden: Tensor) -> list[int]:
        logits = head(hidden)[0]  # (n, V)
        if blocked.numel():
            logits[:, blocked] = float("-inf")
        return logits.argmax(-1).tolist()

    out = lm(inputs_embeds=prompt_embeds, use_cache=True)
    cache = out.cache
    new = choose(out.last_hidden_state[:, -1:])
    history = list(prompt_ids) + new
    while len(new) < max_new and new[-1] != eos_token_id:
        # a pass yields the accepted draft plus the model's next token: never more than max_new in all
        proposal = draft(history, book, max_draft=min(max_draft, max_new - len(new) - 1)) if max_draft else []
        ids = torch.tensor([[new[-1], *proposal]], device=device)
        chosen = choose(lm(inputs_embeds=embed(ids), cache=cache, use_cache=True).last_hidden_state)
        kept = 0
        while kept < len(proposal) and proposal[kept] == chosen[kept]:
            kept += 1
        if kept < len(proposal):  # the cache holds the rejected tokens' keys and values: drop them
            cache.crop(-(len(proposal) - kept))
        for t in chosen[:kept + 1]:
            new.append(t)
            history.append(t)
            if t == eos_token_id:
                break
    return torch.tensor([new], dtype=torch.long, device=device)
