import re

import open_clip
import pytest
import torch

from samllava.coarse.clip_model import CheckpointError, build_clip, load_clip_weights, register_model_config


def test_weights_round_trip_and_pos_embed_resize(tiny_profile, tmp_path):
    cfg = tiny_profile.clip
    torch.manual_seed(1)
    source, _ = build_clip(cfg, None)
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)  # wrapped, DDP names
    loaded, tokenizer = build_clip(cfg, path)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    assert tokenizer(["a photo"]).shape == (1, 77)
    # Weights of a 64-px model into an 80-px model: the positional grid is resized (4x4 -> 5x5).
    bigger, _ = build_clip(tiny_profile.replace(**{"clip.image_size": 80}).clip, path)
    assert bigger.visual.positional_embedding.shape[0] == 5 * 5 + 1
    assert torch.equal(bigger.visual.conv1.weight, source.visual.conv1.weight)


def test_truncated_checkpoint_is_a_clear_error(tiny_profile, tmp_path):
    source, _ = build_clip(tiny_profile.clip, None)
    path = tmp_path / "clip.pt"
    torch.save(source.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"CLIP weights {re.escape(str(path))}: cannot be read"):
        build_clip(tiny_profile.clip, path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_clip(tiny_profile.clip, tmp_path / "missing.pt")


def test_wrong_architecture_is_a_clear_error(tiny_profile, tmp_path):
    other = tiny_profile.replace(**{"clip.model_name": "samllava-test-wide",
                                    "clip.model_config.embed_dim": 48})
    wide, _ = build_clip(other.clip, None)
    path = tmp_path / "wide.pt"
    torch.save(wide.state_dict(), path)
    model, _ = build_clip(tiny_profile.clip, None)
    with pytest.raises(
        CheckpointError,
        match=rf"(?s){re.escape(str(path))} do not match the architecture.*size mismatch for text_projection",
    ):
        load_clip_weights(model, path)


def test_model_config_registration(tiny_profile):
    with pytest.raises(ValueError, match="built-in open_clip architecture"):
        register_model_config("ViT-B-16", tiny_profile.clip.model_config)
    with pytest.raises(ValueError, match="lacks"):
        register_model_config("samllava-bad", {"embed_dim": 8})
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        build_clip(tiny_profile.replace(**{"clip.model_name": "no-such-arch", "clip.model_config": None}).clip, None)
    register_model_config("samllava-test-reg", tiny_profile.clip.model_config)
    assert open_clip.get_model_config("samllava-test-reg") == tiny_profile.clip.model_config
