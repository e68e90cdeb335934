"""Greedy decoding over a static KV cache, optionally replayed as a CUDA graph.

``generate()`` in transformers re-plans every step on the host; at batch 1 on a GPU a 7B model is
then launch-bound (about 25 ms per token against a 3.2 ms memory floor, see
docs/gpu.md). :class:`StaticGreedyDecoder` keeps every tensor of the decode step
at a fixed address (token, position and a preallocated ``StaticCache``), so the step can be
captured once with ``torch.cuda.CUDAGraph`` and replayed per token. On the CPU (and with
``graph=False``) the same loop runs eagerly: tests check it against ``Describer.generate``.
Optionally the step is first compiled with ``torch.compile`` (then captured as it is), falling
back to the eager step when compilation fails.

Only batches without padding are supported (all prompts of one batch have the same length, as
in benchmarking one prompt template); ``Describer.generate`` remains the general path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import StaticCache

from samllava.data.instructions import QUESTION
from samllava.evaluate.bench import BENCH_CATEGORY, before_language_model, peak_memory_gb, reset_peak, time_fn


class StaticGreedyDecoder:
    """Greedy decoding of ``max_new`` tokens after a prompt given as input embeddings.

    Args:
        describer: a :class:`samllava.describe.llava.Describer` (LoRA merged or not).
        batch: batch size the buffers are built for.
        max_len: prompt length + new tokens the cache holds.
        graph: capture the decode step as a CUDA graph (CUDA only).
        compile: a ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``: the CUDA graph is
            ours) for the decode step, or None for eager. It fuses the step's small elementwise
            kernels (RMSNorm, rotary, SiLU * up) that remain once launches are captured. Should
            compilation (or capturing the compiled step) fail, a warning is printed and the eager step
            is used; :attr:`step_path` says which one runs, :attr:`compile_error` why.
    """

    def __init__(self, describer, batch: int, max_len: int, graph: bool = False, compile: str | None = None) -> None:
        self.d = describer
        llava = describer.llava
        self.lm = llava.model.language_model
        self.head = llava.lm_head
        self.embed = llava.get_input_embeddings()
        p = next(self.lm.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.batch, self.max_len = batch, max_len
        self.cache = StaticCache(config=llava.config.text_config, max_cache_len=max_len)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self.next = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self.use_graph = graph and self.device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.compile_mode = compile
        self.compile_error: str | None = None
        self.step_path = "eager"  # "eager" or "compiled:<mode>", settled by _prepare
        # the decode step in use, a function of the decoder: a bound method kept on self would be a
        # reference cycle, keeping the cache and graph of a dropped decoder until the next gc pass
        self._run = StaticGreedyDecoder._step
        self._prepared = not (self.use_graph or compile)  # graph capture and compilation happen on first use

    def _step(self) -> None:
        h = self.lm(inputs_embeds=self.embed(self.token), past_key_values=self.cache, cache_position=self.pos,
                    position_ids=self.pos[None].expand(self.batch, -1), use_cache=True).last_hidden_state
        self.next.copy_(self.head(h[:, -1:]).argmax(-1))

    def _warm_up(self, step) -> None:
        """Run ``step`` twice: compilation, allocator and lazy initialisation happen here, not in a
        graph; on CUDA on a side stream, as graph capture requires."""
        if self.device.type != "cuda":
            for _ in range(2):
                step(self)
            return
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                step(self)
        torch.cuda.current_stream().wait_stream(stream)

    def _capture(self, step) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            step(self)

    def _prepare(self) -> None:
        """Settle the decode step: compiled if asked and it works, else eager; captured if ``graph``.

        Runs the step on whatever the cache holds (the caller redoes the prompt afterwards).
        """
        if self.compile_mode:
            compiled = torch.compile(StaticGreedyDecoder._step, mode=self.compile_mode, fullgraph=False)
            try:
                self._settle(compiled)
                self.step_path = f"compiled:{self.compile_mode}"
                return
            except Exception as e:  # noqa: BLE001 - any compiler or capture failure: the eager step still works
                self.compile_error = f"{type(e).__name__}: {e}"[:500]
                self.graph = None
                print(f"[fast_decode] WARNING: torch.compile(mode={self.compile_mode!r}) of the decode step failed, "
                      f"using the eager step: {self.compile_error}", flush=True)
        self._settle(StaticGreedyDecoder._step)

    def _settle(self, step) -> None:
        """Warm ``step`` up, capture it when graphs are on, and use it from now on (raises if it fails)."""
        self._warm_up(step)
        if self.use_graph:
            self._capture(step)
        self._run = step
        self._prepared = True

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, max_new: int, eos_token_id: int | None = None) -> torch.Tensor:
        """(B, L, D) prompt embeddings -> (B, <= max_new) new token ids (greedy; stops when all rows hit eos)."""
        b, length, _ = inputs_embeds.shape
        if b != self.batch or length + max_new > self.max_len:
            raise ValueError(f"decoder built for batch {self.batch} and {self.max_len} positions, "
                             f"got batch {b} with {length} + {max_new}")
        self.cache.reset()
        positions = torch.arange(length, device=self.device)
        h = self.lm(inputs_embeds=inputs_embeds.to(self.dtype), past_key_values=self.cache, cache_position=positions,
                    position_ids=positions[None].expand(b, -1), use_cache=True).last_hidden_state
        self.token.copy_(self.head(h[:, -1:]).argmax(-1))
        out = [self.token.clone()]
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        for i in range(1, max_new):
            if eos_token_id is not None:
                done |= out[-1][:, 0] == eos_token_id
                if i % 16 == 0 and bool(done.all()):  # a host sync only every 16 tokens
                    break
            self.pos.fill_(length + i - 1)
            if not self._prepared:
                self._prepare()
                self.cache.reset()  # warm-up and capture ran the step on stale positions: redo the prompt
                return self.generate(inputs_embeds, max_new, eos_token_id)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._run(self)
            self.token.copy_(self.next)
            out.append(self.token.clone())
        ids = torch.cat(out, dim=1)
        if eos_token_id is not None:  # everything after the first eos is padding
            after = (ids == eos_token_id).int().cumsum(1) > 0
            ids = ids.masked_fill(after, eos_token_id)
        return ids


@torch.no_grad()
def prompt_embeds(
    describer, visual: torch.Tensor, sasa_tokens: torch.Tensor | None, questions: list[str]
) -> torch.Tensor:
    """(B, L, D) input embeddings of the describer's prompt (image features and SASA tokens placed);
    all prompts must have the same token length (no padding)."""
    n_sasa = describer._check_batch(visual, sasa_tokens, questions, None)
    rows = [describer._encode(describer._prompt(q, n_sasa), None)[0] for q in questions]
    if len({len(r) for r in rows}) != 1:
        raise ValueError(
            "StaticGreedyDecoder needs prompts of one token length; use Describer.generate for mixed lengths"
        )
    ids = torch.tensor(rows, device=visual.device)
    return describer._inputs_embeds(ids, visual, sasa_tokens)


def fast_diagnose(model, prec, batch: int, category: str, new_tokens: int, runs: int, warmup: int,
                  compile_decode: str | None = None) -> dict:
    """The whole diagnosis with the static-cache decoder (a CUDA graph on GPUs), all ``new_tokens`` decoded.

    Same stages as :meth:`SamLlava.diagnose`; the text embeddings are cached per category and the
    SAM embedding is computed once per image, as there. ``compile_decode``: a ``torch.compile`` mode
    for the decode step (see :class:`StaticGreedyDecoder`); the path taken is in ``decode_step``.
    """
    dev = prec.dev
    images = prec.images(batch, model.profile.data.image_size)
    q = [QUESTION.format(category=model.phrase(category))] * batch

    def embeds():  # (batch, L, D) prompt embeddings
        enc, _, sasa_tokens = before_language_model(model, prec, images, category)
        with prec.autocast():
            return prompt_embeds(model.describer, enc.visual, sasa_tokens, q)

    with torch.no_grad(), torch.autocast(dev.type, enabled=False):  # the decoder runs in the LM's own dtype
        emb = embeds()
        length = emb.shape[1]
        dec = StaticGreedyDecoder(model.describer, batch=batch, max_len=length + new_tokens, graph=dev.type == "cuda",
                                  compile=compile_decode)
        decode_only = time_fn(lambda: dec.generate(emb, new_tokens), max(1, runs // 4), 1, dev)
        reset_peak(dev)
        t = time_fn(lambda: dec.generate(embeds(), new_tokens), max(1, runs // 4), min(1, warmup), dev)
    t["images_per_s"] = 1000 * batch / t["mean_ms"]
    t["peak_memory_GB"] = peak_memory_gb(dev)
    t["decode_only_ms"] = decode_only["mean_ms"]
    t["ms_per_token"] = decode_only["mean_ms"] / new_tokens
    t["prompt_tokens"] = length
    t["cuda_graph"] = dec.use_graph
    t["decode_step"] = dec.step_path
    if dec.compile_error is not None:
        t["compile_error"] = dec.compile_error
    return t


@dataclass
class FastDecodeBench:
    """``extra`` measurements for :func:`samllava.evaluate.bench.bench`: the whole diagnosis with the
    static-cache decoder at each batch size, in the report's ``end_to_end_fast`` section."""

    batch_sizes: tuple[int, ...] = (1,)
    compile_mode: str | None = None  # torch.compile mode of the decode step (None: eager)

    def __call__(self, model, prec, measure, settings) -> None:
        measure.report["options"]["compile_decode"] = self.compile_mode
        for b in self.batch_sizes:
            measure("end_to_end_fast", f"batch_{b}", lambda b=b: fast_diagnose(
                model, prec, b, BENCH_CATEGORY, settings.new_tokens, settings.runs, settings.warmup, self.compile_mode))
