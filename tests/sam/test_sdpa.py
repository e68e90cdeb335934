"""SAM's image-encoder attention through SDPA (samllava.sam.sdpa) computes what segment_anything does."""
import copy
from functools import partial

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention

from samllava.core.config import load_profile
from samllava.sam.build import build_sam
from samllava.sam.sdpa import SdpaAttention, use_sdpa


def _encoder(use_rel_pos: bool, img_size: int = 64) -> ImageEncoderViT:
    """A tiny ViT with windowed (blocks 0, 2) and global (block 1) attention; random weights everywhere,
    the relative-position tables included (SAM zero-initialises them, which would test nothing)."""
    enc = ImageEncoderViT(img_size=img_size, patch_size=8, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2,
                          out_chans=16, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=use_rel_pos,
                          window_size=3, global_attn_indexes=(1,))
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.5)
    return enc.eval()


# img_size 64 -> an 8 x 8 grid: windows of 3 pad it to 9 x 9 (segment_anything's padding path)
@pytest.mark.parametrize("use_rel_pos", [True, False])
def test_patched_encoder_matches_original(use_rel_pos):
    original = _encoder(use_rel_pos)
    patched = copy.deepcopy(original)
    assert use_sdpa(patched) == 3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, got = original(x), patched(x)
    assert got.shape == want.shape == (2, 16, 8, 8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gradients_flow_to_input_and_parameters():
    original = _encoder(True)
    patched = copy.deepcopy(original)
    use_sdpa(patched)
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for enc in (original, patched):
        xi = x.clone().requires_grad_(True)
        enc(xi).square().mean().backward()
        grads.append((xi.grad, {n: p.grad for n, p in enc.named_parameters()}))
    (gx_want, gp_want), (gx_got, gp_got) = grads
    torch.testing.assert_close(gx_got, gx_want, rtol=1e-4, atol=1e-5)
    for name in ("blocks.1.attn.rel_pos_h", "blocks.0.attn.rel_pos_w", "blocks.1.attn.qkv.weight"):
        assert gp_got[name] is not None and gp_got[name].abs().sum() > 0
        torch.testing.assert_close(gp_got[name], gp_want[name], rtol=1e-4, atol=1e-5)


def test_state_dict_unchanged_and_loads_both_ways():
    original = _encoder(True)
    patched = copy.deepcopy(original)
    use_sdpa(patched)
    assert list(patched.state_dict()) == list(original.state_dict())
    fresh = _encoder(True)
    use_sdpa(fresh)
    fresh.load_state_dict(original.state_dict(), strict=True)  # an official-format checkpoint still loads
    assert all(isinstance(m, Attention) for m in patched.modules() if isinstance(m, SdpaAttention))


def test_idempotent_and_builder_uses_it():
    sam = build_sam(load_profile("tiny").sam)
    attn = [m for m in sam.image_encoder.modules() if isinstance(m, Attention)]
    assert attn and all(type(m) is SdpaAttention for m in attn)
    assert use_sdpa(sam) == len(attn) == len(sam.image_encoder.blocks)  # a second call changes nothing
    # the mask decoder's attention is another class, left alone
    assert not any(isinstance(m, SdpaAttention) for m in sam.mask_decoder.modules())
