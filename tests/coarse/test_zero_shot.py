import pytest
import torch
import torch.nn.functional as F

from samllava.coarse.backbone import clip_block_tokens
from samllava.coarse.prompts import prompt_sentences
from samllava.coarse.zero_shot import TextCache, ZeroShotLocalizer, gaussian_blur_maps


def test_text_features_normalised_and_cached_once(tiny_zero_shot):
    zs = tiny_zero_shot
    calls = []
    original = zs.encode_text

    def counting(sentences):
        calls.append(len(sentences))
        return original(sentences)

    cache = TextCache(zs)
    zs.encode_text = counting  # instance attribute shadows the method
    try:
        feats = cache.get("bottle")
        again = cache.get("bottle")
        tokens = cache.tokens("bottle")
        cache.get("screw")
    finally:
        del zs.encode_text
    normal, anomalous = prompt_sentences("bottle")
    assert calls == [len(normal) + len(anomalous)] * 2  # once per phrase: bottle, screw
    assert feats is again and len(cache) == 2 and "bottle" in cache
    d = zs.model.text_projection.shape[1]
    assert feats.shape == (2, d) and tokens.shape == (len(normal) + len(anomalous), d)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(tokens.norm(dim=-1), torch.ones(len(tokens)), atol=1e-5)
    # WinCLIP: mean of the normalised prompt embeddings, normalised again.
    expected = F.normalize(torch.stack([tokens[: len(normal)].mean(0), tokens[len(normal):].mean(0)]), dim=-1)
    assert torch.allclose(feats, expected, atol=1e-6)
    assert not feats.requires_grad


def test_heatmap_shape_and_range(tiny_zero_shot, tiny_profile, tiny_text):
    zs, text = tiny_zero_shot, tiny_text
    side = tiny_profile.data.image_size
    for s in (side, 48):  # the model side, and another input side (resized inside, map at input side)
        heatmap, score = zs(torch.rand(3, 3, s, s), text)
        assert heatmap.shape == (3, s, s) and score.shape == (3,)
        assert heatmap.min() >= 0 and heatmap.max() <= 1 and heatmap.std() > 0
        assert ((score >= 0) & (score <= 1)).all()


def test_score_uses_class_embedding_equal_to_encode_image(tiny_zero_shot, tiny_text):
    zs, text = tiny_zero_shot, tiny_text
    x = torch.rand(2, 3, 64, 64)
    prep = zs.preprocess(x)
    _, pooled = clip_block_tokens(zs.model.visual, prep, zs.indices, pooled=True)
    # The class token passes the final LayerNorm and projection, as in encode_image.
    assert torch.allclose(pooled, zs.model.encode_image(prep), atol=1e-5)
    heatmap, score = zs(x, text)
    cls_prob = (F.normalize(pooled, dim=-1) @ text.t() / zs.cfg.temperature).softmax(-1)[:, 1]
    assert torch.allclose(score, 0.5 * (cls_prob + heatmap.flatten(1).amax(1)), atol=1e-5)


def test_layer_intermediates_are_the_blocks_outputs(tiny_zero_shot):
    visual = tiny_zero_shot.model.visual
    x = tiny_zero_shot.preprocess(torch.rand(2, 3, 64, 64))
    tokens, _ = clip_block_tokens(visual, x, [1, 3])  # blocks 2 and 4
    assert not torch.allclose(tokens[0], tokens[1])  # the missing-clone pitfall makes them equal
    assert tokens[0].data_ptr() != tokens[1].data_ptr()
    # Parity with running the blocks by hand.
    h = visual._embeds(x)
    manual = []
    for blk in visual.transformer.resblocks:
        h = blk(h)
        manual.append(h[:, 1:])
    assert torch.allclose(tokens[0], manual[1], atol=1e-5) and torch.allclose(tokens[1], manual[3], atol=1e-5)


def test_blur(tiny_zero_shot):
    maps = torch.zeros(1, 32, 32)
    maps[0, 16, 16] = 1
    assert torch.equal(gaussian_blur_maps(maps, 0), maps)
    blurred = gaussian_blur_maps(maps, 2.0)
    assert blurred.shape == maps.shape and blurred[0, 16, 16] < 1 and blurred[0, 16, 18] > 0
    assert torch.isclose(blurred.sum(), torch.tensor(1.0), atol=1e-4)


def test_bad_inputs(tiny_zero_shot, tiny_profile, tiny_clip, tiny_text):
    zs, text = tiny_zero_shot, tiny_text
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        zs(torch.rand(2, 1, 64, 64), text)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        zs(torch.rand(2, 3, 64, 64) * 255, text)
    with pytest.raises(ValueError, match="text_feats"):
        zs(torch.rand(2, 3, 64, 64), torch.rand(3, text.shape[1]))
    with pytest.raises(ValueError, match="no prompt sentences"):
        zs.text_features([], [])
    model, tokenizer = tiny_clip
    with pytest.raises(ValueError, match=r"layers \[2, 9\]"):
        ZeroShotLocalizer(model, tokenizer, tiny_profile.replace(**{"clip.layers": [2, 9]}).clip)
