"""SAM builders and checkpoint checks (samllava.sam.build)."""
from pathlib import Path

import pytest
import torch

from samllava.config import SamConfig, load_profile
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
