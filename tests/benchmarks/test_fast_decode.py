"""The static-cache greedy decoder gives the tokens of Describer.generate (eager, CPU)."""
import torch

from samllava.core.config import load_profile
from fast_decode import StaticGreedyDecoder, prompt_embeds
from samllava.describe.build import build_describer


def test_static_decoder_matches_generate():
    d = build_describer(load_profile("tiny")).eval()
    s = d.image_size
    px = torch.rand(2, 3, s, s)
    sasa = torch.randn(2, 5, d.llm_dim)
    q = ["Is there any anomaly in the image?"] * 2
    emb = prompt_embeds(d, px, sasa, q)
    dec = StaticGreedyDecoder(d, batch=2, max_len=emb.shape[1] + 12)
    ids = dec.generate(emb, 12)
    text = [t.strip() for t in d.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    assert text == d.generate(px, sasa, q, max_new_tokens=12)
    # reusable: a second call with other inputs reuses the cache
    ids2 = dec.generate(prompt_embeds(d, torch.rand(2, 3, s, s), sasa, q), 12)
    assert ids2.shape[0] == 2


def _decoder_case():
    d = build_describer(load_profile("tiny")).eval()
    s = d.image_size
    emb = prompt_embeds(
        d, torch.rand(2, 3, s, s), torch.randn(2, 5, d.llm_dim), ["Is there any anomaly in the image?"] * 2
    )
    want = StaticGreedyDecoder(d, batch=2, max_len=emb.shape[1] + 6).generate(emb, 6)
    return d, emb, want


def test_compiled_step_gives_the_same_tokens(monkeypatch):
    # Dynamo traces the real step; the "eager" backend skips Inductor's code generation (a minute on a CPU).
    real = torch.compile
    modes = []

    def traced(fn, mode=None, **kw):
        modes.append(mode)
        return real(fn, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", traced)
    d, emb, want = _decoder_case()
    dec = StaticGreedyDecoder(d, batch=2, max_len=emb.shape[1] + 6, compile="max-autotune-no-cudagraphs")
    assert torch.equal(dec.generate(emb, 6), want)
    assert torch.equal(dec.generate(emb, 6), want)  # compiled once, reused
    assert modes == ["max-autotune-no-cudagraphs"]
    assert dec.step_path == "compiled:max-autotune-no-cudagraphs" and dec.compile_error is None


def test_failed_compile_falls_back_to_eager(monkeypatch, capsys):
    def broken(fn, **kw):
        def run(*args):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    d, emb, want = _decoder_case()
    dec = StaticGreedyDecoder(d, batch=2, max_len=emb.shape[1] + 6, compile="default")
    assert torch.equal(dec.generate(emb, 6), want)
    assert dec.step_path == "eager"
    assert "no compiler here" in dec.compile_error
    assert "WARNING" in capsys.readouterr().out


def test_dropped_decoder_frees_its_cache_at_once():
    # no reference cycle: a benchmark's next batch size must not find the last one's cache still held
    import gc
    import weakref

    d, emb, _ = _decoder_case()
    dec = StaticGreedyDecoder(d, batch=2, max_len=emb.shape[1] + 6)
    dec.generate(emb, 6)
    keys = weakref.ref(dec.cache.layers[0].keys)
    gc.disable()
    try:
        del dec
        assert keys() is None
    finally:
        gc.enable()
