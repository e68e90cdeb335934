"""The static-cache greedy decoder gives the tokens of Describer.generate (eager, CPU)."""
import torch

from samllava.config import load_profile
from samllava.describe.fast_decode import StaticGreedyDecoder, prompt_embeds
from samllava.describe.llava import build_describer


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
