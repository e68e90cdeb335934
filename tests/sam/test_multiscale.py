"""Multi-scale prompt learner (Eq. 5) and decoder (Eq. 6 branches), with parity against SAM."""
import pytest
import torch

from samllava.core.config import load_profile
from samllava.sam.build import build_sam
from samllava.sam.multiscale import MultiScaleMaskDecoder, MultiScalePromptLearner, _PoolBranch

C = 32  # tiny SAM prompt width


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return build_sam(load_profile("tiny").sam)


def _decoder_inputs(sam, b: int = 3, tokens: int = 2):
    h, w = sam.prompt_encoder.image_embedding_size
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, C, h, w, generator=g), sam.prompt_encoder.get_dense_pe(),
            torch.randn(b, tokens, C, generator=g), torch.randn(b, C, h, w, generator=g))


@pytest.mark.parametrize("h, w", [(8, 8), (7, 5), (3, 3)])
def test_prompt_learner_shapes_and_zero_init(h, w):
    learner = MultiScalePromptLearner(C, kernels=(8, 4, 2))
    mask = torch.rand(2, 1, h, w)
    assert learner.multi_scale_prompt(mask).shape == (2, 3 * C, h, w)
    out = learner(mask)
    assert out.shape == (2, C, h, w)
    assert (out == 0).all()  # zero-initialised fusion: plain SAM at initialisation
    out.sum().backward()
    assert learner.fuse.weight.grad.abs().sum() > 0  # ...but it learns


@pytest.mark.parametrize("k", [8, 4, 2, 1])
def test_each_branch_pools_with_its_kernel(k):
    branch = _PoolBranch(C, k, torch.nn.GELU)
    a, b = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    a[0, 0, 0, 0] = 1.0
    b[0, 0, 1, 1] = 1.0  # same k x k block (k >= 2), other pixel
    ya, yb = branch(a), branch(b)
    assert ya.shape == (1, C, 8, 8)
    if k == 1:
        assert not torch.allclose(ya, yb)
    else:
        torch.testing.assert_close(ya, yb)  # the block average is all the branch sees


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("multiscale", [False, True])
def test_mid_branch_equals_segment_anything_per_image(sam, multiscale, multimask):
    emb, pe, sparse, dense = _decoder_inputs(sam)
    ours = MultiScaleMaskDecoder(sam.mask_decoder, multiscale=multiscale)
    logits, iou = ours(emb, pe, sparse, dense, multimask)
    for i in range(emb.shape[0]):
        ref_masks, ref_iou = sam.mask_decoder(emb[i : i + 1], pe, sparse[i : i + 1], dense[i : i + 1], multimask)
        torch.testing.assert_close(logits["mid"][i : i + 1], ref_masks)
        torch.testing.assert_close(iou[i : i + 1], ref_iou)
    assert set(logits) == ({"high", "mid", "low"} if multiscale else {"mid"})


def test_parity_with_segment_anything_one_image_many_prompts(sam):
    # SAM's own batching: one image, B prompt sets.
    emb, pe, sparse, dense = _decoder_inputs(sam)
    ref_masks, ref_iou = sam.mask_decoder(emb[:1], pe, sparse, dense, True)
    logits, iou = MultiScaleMaskDecoder(sam.mask_decoder)(emb[:1].expand(3, -1, -1, -1), pe, sparse, dense, True)
    torch.testing.assert_close(logits["mid"], ref_masks)
    torch.testing.assert_close(iou, ref_iou)


@pytest.mark.parametrize("multimask, nm", [(True, 3), (False, 1)])
def test_branch_resolutions(sam, multimask, nm):
    emb, pe, sparse, dense = _decoder_inputs(sam, b=2, tokens=0)
    decoder = MultiScaleMaskDecoder(sam.mask_decoder)
    logits, iou = decoder(emb, pe, sparse, dense, multimask)
    h = emb.shape[-1]
    assert logits["low"].shape == (2, nm, h, h)
    assert logits["mid"].shape == (2, nm, 4 * h, 4 * h)
    assert logits["high"].shape == (2, nm, 8 * h, 8 * h)
    assert iou.shape == (2, nm)
    # the hooks that read SAM's intermediate tensors are gone after the call
    assert not sam.mask_decoder.transformer._forward_hooks and not sam.mask_decoder.output_upscaling._forward_hooks


def test_extra_branches_train_from_their_loss(sam):
    emb, pe, sparse, dense = _decoder_inputs(sam, b=2)
    decoder = MultiScaleMaskDecoder(sam.mask_decoder)
    logits, _ = decoder(emb, pe, sparse, dense, True)
    (logits["low"].sum() + logits["high"].sum()).backward()
    assert decoder.low_hypernetworks[1].layers[0].weight.grad.abs().sum() > 0
    assert decoder.high_upscaling[0].weight.grad.abs().sum() > 0
    sam.zero_grad(set_to_none=True)


def test_multiscale_off_adds_no_parameters(sam):
    plain = MultiScaleMaskDecoder(sam.mask_decoder, multiscale=False)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in sam.mask_decoder.parameters())


def test_one_prompt_set_per_image_is_enforced(sam):
    emb, pe, sparse, dense = _decoder_inputs(sam, b=3)
    with pytest.raises(ValueError, match="one prompt set per image"):
        MultiScaleMaskDecoder(sam.mask_decoder)(emb, pe, sparse[:2], dense, True)
