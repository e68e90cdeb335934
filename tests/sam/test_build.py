"""SAM builders and checkpoint checks (samllava.sam.build)."""
from pathlib import Path

import pytest
import torch

from samllava.core.config import SamConfig, load_profile
from samllava.sam.build import SAM_REGISTRY, build_sam


@pytest.fixture
def tiny_cfg() -> SamConfig:
    return load_profile("tiny").sam


def _save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def test_registry_lists_every_size():
    assert set(SAM_REGISTRY) == {"tiny", "vit_b", "vit_l", "vit_h"}


def test_tiny_follows_config_image_size(tiny_cfg):
    sam = build_sam(tiny_cfg)
    assert sam.image_encoder.img_size == tiny_cfg.image_size == 64
    emb = sam.image_encoder(torch.zeros(1, 3, 64, 64))
    assert emb.shape == (1, 32, 8, 8)
    assert sam.prompt_encoder.mask_input_size == (32, 32)  # 4 x embedding side, as SAM's 256 for 1024
    assert not sam.training


def test_official_sizes_match_segment_anything_shapes():
    # Compare with segment_anything's own builder on the meta device (no memory).
    from segment_anything.build_sam import sam_model_registry

    for size in ("vit_b", "vit_h"):
        with torch.device("meta"):
            ours = SAM_REGISTRY[size]().state_dict()
            ref = sam_model_registry[size]().state_dict()
        assert ours.keys() == ref.keys()
        assert all(ours[k].shape == ref[k].shape for k in ref)


def test_checkpoint_round_trip(tiny_cfg, tmp_path):
    source = build_sam(tiny_cfg)
    path = _save(source.state_dict(), tmp_path / "sam_tiny.pth")
    loaded = build_sam(tiny_cfg, path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_wrong_shape_names_file_key_and_shapes(tiny_cfg, tmp_path):
    state = build_sam(tiny_cfg).state_dict()
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(48, 3, 8, 8)
    path = _save(state, tmp_path / "altered.pth")
    with pytest.raises(ValueError) as err:
        build_sam(tiny_cfg, path)
    msg = str(err.value)
    assert "altered.pth" in msg and "tiny" in msg
    assert "image_encoder.patch_embed.proj.weight has shape (48, 3, 8, 8)" in msg
    assert "expects (32, 3, 8, 8)" in msg


def test_checkpoint_of_another_size_is_recognised(tiny_cfg, tmp_path):
    path = _save(build_sam(tiny_cfg).state_dict(), tmp_path / "sam_tiny.pth")
    cfg = SamConfig(size="vit_b", image_size=64)  # checked on the meta device: vit_b never allocated
    with pytest.raises(
        ValueError,
        match=r"sam_tiny\.pth.*but vit_b \(image_size 64\) expects \(768, 3, 16, 16\)"
        r".*is this sam_tiny \(image_size 64\)\?",
    ):
        build_sam(cfg, path)


def test_missing_tensors_are_reported(tiny_cfg, tmp_path):
    state = build_sam(tiny_cfg).state_dict()
    del state["mask_decoder.iou_token.weight"]
    path = _save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth.*1 tensor\(s\).*missing.*mask_decoder\.iou_token\.weight"):
        build_sam(tiny_cfg, path)


def test_truncated_file_is_reported(tiny_cfg, tmp_path):
    full = _save(build_sam(tiny_cfg).state_dict(), tmp_path / "full.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.pth.*cannot be read"):
        build_sam(tiny_cfg, cut)


def test_bad_inputs(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_sam(tiny_cfg, tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="unknown SAM size 'vit_x'"):
        build_sam(SamConfig(size="vit_x"))
    with pytest.raises(ValueError, match="image_size 60 is not a multiple"):
        build_sam(SamConfig(size="tiny", image_size=60))
    path = _save({"not": "tensors"}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="junk.pth.*state dict"):
        build_sam(tiny_cfg, path)


def test_state_dict_of_segment_anythings_own_modules_loads_through_our_builder(tiny_cfg, tmp_path):
    """A tiny SAM composed directly from segment_anything.modeling (its constants written out here, not taken
    from samllava), saved as the official checkpoints are (a plain state dict), loads through build_sam and
    computes what the original computes."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(7)
    side, embed = tiny_cfg.image_size, 32  # 64 px, 8 px patches: an 8 x 8 embedding
    reference = Sam(
        image_encoder=ImageEncoderViT(img_size=side, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4,
                                      out_chans=embed, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      use_rel_pos=True, window_size=4, global_attn_indexes=(1,)),
        prompt_encoder=PromptEncoder(embed_dim=embed, image_embedding_size=(side // 8, side // 8),
                                     input_image_size=(side, side), mask_in_chans=8),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=embed, mlp_dim=64, num_heads=2),
                                 transformer_dim=embed, iou_head_depth=3, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    path = _save(reference.state_dict(), tmp_path / "sam_tiny_from_segment_anything.pth")
    ours = build_sam(tiny_cfg, path)
    theirs = reference.state_dict()
    assert ours.state_dict().keys() == theirs.keys()
    assert all(torch.equal(ours.state_dict()[k], theirs[k]) for k in theirs)
    x = torch.rand(2, 3, side, side) * 255
    with torch.no_grad():
        emb = reference.image_encoder(reference.preprocess(x))
        torch.testing.assert_close(ours.image_encoder(ours.preprocess(x)), emb, rtol=1e-4, atol=1e-5)
        sparse, dense = reference.prompt_encoder(points=None, boxes=None, masks=None)
        want = reference.mask_decoder(emb, reference.prompt_encoder.get_dense_pe(), sparse, dense, True)
        got = ours.mask_decoder(emb, ours.prompt_encoder.get_dense_pe(), *ours.prompt_encoder(None, None, None), True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
