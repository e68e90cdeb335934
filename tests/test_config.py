import json

import pytest

from samllava.config import PROFILE_DIR, apply_overrides, load_profile, profile_from_dict


@pytest.mark.parametrize("name", ["tiny", "offline", "paper"])
def test_profiles_parse(name):
    p = load_profile(name)
    assert p.name == name
    assert p.lora.targets == ("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")


def test_paper_profile_matches_paper():
    p = load_profile("paper")
    assert p.clip.model_name == "ViT-B-16" and p.clip.image_size == 240
    assert p.fewshot.layers == (3, 8, 12)
    assert p.sam.size == "vit_h"
    assert (p.lora.r, p.lora.alpha) == (16, 32)
    assert p.multiscale.branch_weights == (0.3, 1.0, 0.2) and p.multiscale.kernels == (8, 4, 2)
    assert (p.train.lr, p.train.batch_size, p.train.epochs) == (1e-4, 8, 50)
    assert (p.train.seg_weight, p.train.gen_weight) == (1.0, 1.0)
    assert p.random_ok == ()  # never random weights silently
    assert all(v.startswith("real") for v in p.weights_label().values())


def test_offline_profile_real_weights_where_packaged():
    labels = load_profile("offline").weights_label()
    assert labels["fewshot"].startswith("real") and labels["llm"].startswith("real")
    assert labels["clip"] == "random" and labels["sam"] == "random"


def test_unknown_field_rejected_with_name():
    data = json.loads((PROFILE_DIR / "tiny.json").read_text())
    data["sam"]["sise"] = "vit_b"
    with pytest.raises(ValueError, match="sise"):
        profile_from_dict(data)


def test_unknown_profile_lists_known():
    with pytest.raises(FileNotFoundError, match="known profiles"):
        load_profile("huge")


def test_overrides():
    p = load_profile("tiny")
    q = apply_overrides(p, {"sam.prompt": "box", "sasa.enabled": False})
    assert (q.sam.prompt, q.sasa.enabled) == ("box", False)
    assert p.sam.prompt == "mask"  # the original is untouched
    with pytest.raises(KeyError, match="nope"):
        apply_overrides(p, {"sam.nope": 1})
