"""The CLIP-SAM cascade (Eq. 3-4): geometry, prompt variants, parity with plain SAM."""
import pytest
import torch

from samllava.assets import weights
from samllava.core.config import load_profile
from samllava.sam.build import build_sam
from samllava.sam.cascade import SamCascade, build_cascade
from samllava.sam.prompts import mask_to_logits

PROFILE = load_profile("tiny")


def _cascade(prompt: str = "mask", **ms) -> SamCascade:
    torch.manual_seed(0)
    profile = PROFILE.replace(**{"sam.prompt": prompt, **{f"multiscale.{k}": v for k, v in ms.items()}})
    return build_cascade(profile)


def _masks() -> torch.Tensor:
    m = torch.zeros(3, 64, 64, dtype=torch.bool)
    m[0, 10:30, 5:20] = True
    m[0, 50:55, 50:60] = True
    m[2] = True  # full image; image 1 stays empty
    return m


@pytest.fixture(scope="module")
def embeddings() -> torch.Tensor:
    return _cascade().embed(torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)))


def test_preprocess_resizes_normalises_and_pads():
    cascade = _cascade()
    x = cascade.preprocess(torch.full((1, 3, 48, 96), 0.5))  # longest side 96 -> 64: (32, 64)
    assert x.shape == (1, 3, 64, 64)
    mean, std = cascade.sam.pixel_mean.view(3), cascade.sam.pixel_std.view(3)
    torch.testing.assert_close(x[0, :, :32].mean((1, 2)), (127.5 - mean) / std)
    assert (x[0, :, 32:] == 0).all()  # SAM pads after normalising


def test_preprocess_rejects_bad_images():
    cascade = _cascade()
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        cascade.preprocess(torch.full((1, 3, 8, 8), 255.0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        cascade.preprocess(torch.rand(1, 8, 8))


def test_embed_is_frozen_and_shaped(embeddings):
    cascade = _cascade()
    assert embeddings.shape == (3, 32, 8, 8) and not embeddings.requires_grad
    assert not any(p.requires_grad for p in cascade.sam.image_encoder.parameters())
    encoder = {id(p) for p in cascade.sam.image_encoder.parameters()}
    trainable = cascade.trainable_parameters()
    assert trainable and not any(id(p) in encoder for p in trainable)
    assert any(p is cascade.prompt_learner.fuse.weight for p in trainable)


@pytest.mark.parametrize("ms_decoder", [True, False])
def test_mask_prompt_at_init_equals_plain_sam(embeddings, ms_decoder):
    cascade = _cascade("mask", decoder=ms_decoder)
    masks = _masks()
    out = cascade(embeddings, masks, 64)
    sam = cascade.sam
    logits_in = mask_to_logits(masks, 32, PROFILE.sam.mask_logit)
    for i in range(3):
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=logits_in[i : i + 1])
        ref, ref_iou = sam.mask_decoder(embeddings[i : i + 1], sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
        torch.testing.assert_close(out.branch_logits["mid"][i : i + 1], ref)
        torch.testing.assert_close(out.iou[i : i + 1], ref_iou)


def test_no_prompt_equals_sam_without_prompts(embeddings):
    cascade = _cascade("none")
    out = cascade(embeddings, _masks(), 64)
    sam = cascade.sam
    sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
    ref, _ = sam.mask_decoder(embeddings[:1], sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
    torch.testing.assert_close(out.branch_logits["mid"][:1], ref)
    assert cascade.prompt_learner is None  # no mask prompt, no multi-scale prompt


@pytest.mark.parametrize("prompt", ["mask", "box", "point", "mask+box", "none"])
def test_batch_equals_one_image_at_a_time(embeddings, prompt):
    cascade = _cascade(prompt)
    masks = _masks()
    batch = cascade(embeddings, masks, 64)
    for i in range(3):
        single = cascade(embeddings[i : i + 1], masks[i : i + 1], 64)
        torch.testing.assert_close(batch.branch_logits["high"][i : i + 1], single.branch_logits["high"])
        torch.testing.assert_close(batch.logits[i : i + 1], single.logits)
    assert torch.isfinite(batch.logits).all()


def test_output_is_the_kept_mid_mask(embeddings):
    out = _cascade("mask+box")(embeddings, _masks(), 64)
    assert out.iou.shape == (3, 3) and out.best.tolist() == out.iou.argmax(1).tolist()
    kept = out.kept_branches()
    assert {k: v.shape[1] for k, v in kept.items()} == {"high": 1, "mid": 1, "low": 1}
    torch.testing.assert_close(kept["mid"][:, 0], out.branch_logits["mid"][torch.arange(3), out.best])
    # at a 64-px image, SAM's postprocess is a plain 2x bilinear upsampling of the kept mid mask
    up = torch.nn.functional.interpolate(kept["mid"], (64, 64), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out.logits, up)
    assert out.mask.dtype == torch.bool and torch.equal(out.mask, out.logits > 0)


def test_empty_mask_under_box_prompt_means_no_prompt(embeddings):
    cascade = _cascade("box", prompt_learner=False, decoder=False)
    out = cascade(embeddings, _masks(), 64)
    sam = cascade.sam
    not_a_point = sam.prompt_encoder.not_a_point_embed.weight.expand(1, 2, -1)
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, 8, 8)
    ref, _ = sam.mask_decoder(embeddings[1:2], sam.prompt_encoder.get_dense_pe(), not_a_point, dense, True)
    torch.testing.assert_close(out.branch_logits["mid"][1:2], ref)


@pytest.mark.parametrize("image_hw, mask_hw", [((50, 50), (50, 50)), ((40, 64), (40, 64)), ((40, 64), (20, 32)),
                                               ((97, 61), (97, 61))])
def test_odd_sizes_and_aspect_ratios(image_hw, mask_hw):
    cascade = _cascade("mask+box")
    images = torch.rand(2, 3, *image_hw)
    masks = torch.zeros(2, *mask_hw)
    masks[0, : mask_hw[0] // 2, : mask_hw[1] // 3] = 1.0
    out = cascade(cascade.embed(images), masks, image_hw)
    assert out.logits.shape == out.mask.shape == (2, *image_hw)
    assert torch.isfinite(out.logits).all()


def test_bad_calls_are_rejected(embeddings):
    cascade = _cascade()
    with pytest.raises(ValueError, match="aspect ratio"):
        cascade(embeddings, torch.zeros(3, 64, 32), 64)
    with pytest.raises(ValueError, match="B = 3"):
        cascade(embeddings, torch.zeros(2, 64, 64), 64)
    with pytest.raises(ValueError, match="unknown SAM prompt 'scribble'"):
        SamCascade(cascade.sam, PROFILE.replace(**{"sam.prompt": "scribble"}).sam, PROFILE.multiscale)


def test_build_cascade_resolves_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv("SAMLLAVA_SAM_VIT_H", raising=False)
    with pytest.raises(weights.MissingWeightsError, match="sam_vit_h_4b8939.pth"):
        build_cascade(load_profile("paper"))
    # a checkpoint reached through the weight registry is the one loaded
    source = build_sam(PROFILE.sam)
    torch.save(source.state_dict(), tmp_path / "mine.pth")
    monkeypatch.setenv("SAMLLAVA_SAM_VIT_B", str(tmp_path / "mine.pth"))
    cascade = build_cascade(PROFILE.replace(**{"sam.weights": "sam_vit_b"}))
    torch.testing.assert_close(cascade.sam.mask_decoder.iou_token.weight, source.mask_decoder.iou_token.weight)
