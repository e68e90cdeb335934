"""The benchmark's speed options (samllava.evaluate.bench) change how, not what, the model computes."""
import pytest
import torch

from samllava.evaluate.bench import BenchSettings, Precision, bench, chunk_sam_encoder, merged_lora
from samllava.core.config import load_profile
from samllava.describe.build import build_describer
from samllava.describe.lora import apply_lora
from samllava.sam import build_cascade
from fast_decode import FastDecodeBench  # benchmarks/fast_decode.py (on sys.path: tests/conftest.py)


def test_chunked_sam_encoder_gives_the_same_embeddings():
    cascade = build_cascade(load_profile("tiny"))
    images = torch.rand(3, 3, 64, 64)
    want = cascade.embed(images)
    calls = []
    encoder = cascade.sam.image_encoder
    encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    chunk_sam_encoder(cascade, 2)
    torch.testing.assert_close(cascade.embed(images), want, rtol=1e-5, atol=1e-5)
    assert calls == [2, 1]


def test_merged_lora_keeps_outputs_and_restores_weights():
    tiny = load_profile("tiny")
    d = apply_lora(build_describer(tiny), tiny.lora).eval()
    with torch.no_grad():
        for name, p in d.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the adapters matter
                p.normal_(0, 0.1)
    s = d.image_size
    args = (torch.rand(1, 3, s, s), torch.randn(1, 5, d.llm_dim), ["Is there any anomaly?"], ["No."])
    base = {n: p.detach().clone() for n, p in d.named_parameters() if "base_layer" in n}
    with torch.no_grad():
        want = d(*args).logits
        with merged_lora(d) as merged:
            got = d(*args).logits
            changed = any(not torch.equal(p, base[n]) for n, p in d.named_parameters() if n in base)
    assert merged and changed
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for n, p in d.named_parameters():
        if n in base:
            torch.testing.assert_close(p, base[n], rtol=0, atol=1e-6)
    with merged_lora(d, enabled=False) as merged:
        assert not merged


@pytest.mark.parametrize("cast", [False, True])
def test_precision_autocast_only_where_needed(cast):
    p = Precision(torch.device("cpu"), torch.bfloat16, cast)
    with p.autocast():
        assert torch.is_autocast_enabled("cpu") is (not cast)
    with p.autocast(prompt_encoder=True):
        assert torch.is_autocast_enabled("cpu")
    assert p.images(2, 8).dtype == (torch.bfloat16 if cast else torch.float32)
    assert not Precision(torch.device("cpu"), torch.float32, True).cast  # nothing to cast to


def test_bench_records_its_options_and_measures_everything():
    r = bench(
        load_profile("tiny"),
        BenchSettings(
            runs=1,
            warmup=0,
            new_tokens=3,
            batch_sizes=(),
            dtype="bfloat16",
            cast_weights=True,
            sam_chunk=1,
            merge_lora=True,
            sam_float32=True,
        ),
        log=lambda m: None,
        extra=FastDecodeBench((2,)),
    )
    opts = r["options"]
    assert opts["cast_weights"] and opts["sam_chunk"] == 1 and opts["lora_merged_for_generation"]
    assert opts["sam_sdpa_attention_modules"] == 2 and opts["compile_decode"] is None
    assert "bfloat16 weights" in opts["precision"]["clip_sam_sasa"]
    measured = {**r["stages_ms"], **r["end_to_end_fast"]}
    assert "sam_image_encoder_float32" in measured and "batch_2" in measured
    assert not [k for k, v in measured.items() if "error" in v]
    assert r["end_to_end_fast"]["batch_2"]["decode_step"] == "eager"
