import re

import pytest
import timm
import torch
import torch.nn.functional as F
from skimage import data

from samllava.assets import weights
from samllava.coarse.backbone import (
    ClipBlockExtractor, TimmExtractor, build_feature_extractor, load_timm_features, map_state_dict_by_order,
)
from samllava.coarse.clip_model import CheckpointError, read_state_dict
from samllava.core.config import load_profile


@pytest.fixture(scope="module")
def offline():
    profile = load_profile("offline")
    path = weights.require(profile, "fewshot", profile.fewshot.weights)  # the packaged EfficientNet-Lite0
    return profile, path, read_state_dict(path, "few-shot backbone weights")


def test_offline_backbone_loads_packaged_weights_in_order(offline):
    profile, path, state = offline
    extractor = build_feature_extractor(profile.fewshot, None, path)
    assert isinstance(extractor, TimmExtractor) and "pretrained" in extractor.label
    own = extractor.model.state_dict()
    reference_keys = list(timm.create_model("efficientnet_lite0", pretrained=False).state_dict())
    # The i-th tensor of the file is the i-th tensor of timm's efficientnet_lite0.
    by_name = dict(zip(reference_keys, state.values()))
    assert len(own) > 200
    for key, tensor in own.items():
        assert torch.equal(tensor, by_name[key]), key
    maps = extractor(torch.rand(2, 3, 64, 64))
    side = profile.fewshot.image_size
    assert [tuple(m.shape) for m in maps] == [(2, 40, side // 8, side // 8), (2, 112, side // 16, side // 16)]
    assert not extractor.train().training  # frozen batch-norm statistics


def test_mapped_weights_classify_photos(offline):
    # The whole classifier with the mapped tensors recognises ImageNet classes in skimage's photos,
    # under the normalisation of the offline extractor.
    profile, path, state = offline
    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(map_state_dict_by_order(state, model.state_dict(), str(path)))
    preprocess = build_feature_extractor(profile.fewshot, None, path).preprocess
    def photo(name: str) -> torch.Tensor:  # (3, 224, 224) in [0, 1]
        img = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255
        return F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)[0]

    photos = torch.stack([photo("chelsea"), photo("coffee")])
    with torch.no_grad():
        top = model(preprocess(photos)).argmax(-1).tolist()
    assert top[0] in range(281, 286)  # a domestic cat (tabby ... Egyptian cat)
    assert top[1] in (967, 968)  # espresso / cup


def test_mapping_rejects_foreign_checkpoints(offline):
    _, path, state = offline
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    items = list(state.items())
    shifted = dict(items[1:] + items[:1])
    with pytest.raises(
        CheckpointError, match=r"tensor #0 '_bn0.weight' \(32,\) does not match the architecture's 'conv_stem.weight'"
    ):
        map_state_dict_by_order(shifted, target, "shifted")
    with pytest.raises(CheckpointError, match="295 tensors, but the architecture has 296"):
        map_state_dict_by_order(dict(items[:-1]), target, "short")
    with pytest.raises(CheckpointError, match="lite0 into b0: 296 tensors, but the architecture has 360"):
        load_timm_features("efficientnet_b0", (2, 3), state, "lite0 into b0")


def test_truncated_timm_file(offline, tmp_path):
    profile, path, _ = offline
    bad = tmp_path / "lite0.pth"
    bad.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match=re.escape(f"few-shot backbone weights {bad}: cannot be read")):
        build_feature_extractor(profile.fewshot, None, bad)
    with pytest.raises(ValueError, match="expected 'clip' or 'timm'"):
        build_feature_extractor(profile.replace(**{"fewshot.backbone": "resnet"}).fewshot, None, None)


def test_clip_block_extractor(tiny_clip, tiny_profile):
    model, _ = tiny_clip
    extractor = build_feature_extractor(tiny_profile.fewshot, model.visual, None)
    assert isinstance(extractor, ClipBlockExtractor)
    maps = extractor(torch.rand(2, 3, 64, 64))
    width = tiny_profile.clip.model_config["vision_cfg"]["width"]
    assert [tuple(m.shape) for m in maps] == [(2, width, 4, 4)] * 3
    assert not torch.allclose(maps[1], maps[2])
    with pytest.raises(ValueError, match="strictly increasing"):
        ClipBlockExtractor(model.visual, (3, 1), 64)
    with pytest.raises(ValueError, match="grid"):
        ClipBlockExtractor(model.visual, (1, 3), 96)
