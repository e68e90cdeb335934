"""The offline stand-in for SAM's image encoder: a frozen few-shot backbone at SAM's grid + a trained adapter."""
import pytest
import torch

from samllava.coarse.stage import build_coarse
from samllava.core.config import load_profile
from samllava.sam.backbone_encoder import BackboneEncoder, FrameOnly
from samllava.sam.cascade import build_cascade

PROFILE = load_profile("tiny").replace(**{"sam.encoder": "fewshot_backbone"})


@pytest.fixture(scope="module")
def extractor():
    torch.manual_seed(0)
    return build_coarse(PROFILE)[0].calibrator.extractor


@pytest.fixture(scope="module")
def cascade(extractor):
    torch.manual_seed(0)
    return build_cascade(PROFILE, extractor=extractor)


def _masks() -> torch.Tensor:
    m = torch.zeros(2, 64, 64, dtype=torch.bool)
    m[0, 10:30, 5:20] = True  # image 1 stays empty
    return m


def test_from_maps_resizes_each_level_to_the_grid_and_stacks_channels():
    enc = BackboneEncoder(extractor=None, grid=4)
    a = torch.full((1, 2, 8, 8), 3.0)  # constants survive bilinear resizing exactly
    b = torch.arange(3.0).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = enc.from_maps([a, b])
    assert out.shape == (1, 5, 4, 4)
    torch.testing.assert_close(out[0, :2], torch.full((2, 4, 4), 3.0))
    torch.testing.assert_close(out[0, 2:, 0, 0], torch.tensor([0.0, 1.0, 2.0]))  # level order kept


def test_embedding_shapes_and_fine_masks(cascade, extractor):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    raw = cascade.embed(images)
    widths = sum(m.shape[1] for m in extractor(images))
    g = cascade.sam.prompt_encoder.image_embedding_size
    assert raw.shape == (2, widths, *g)
    assert cascade.image_embedding(raw).shape == (2, cascade.sam.prompt_encoder.embed_dim, *g)
    out = cascade(raw, _masks(), 64)
    assert out.mask.shape == (2, 64, 64) and out.mask.dtype == torch.bool


def test_backbone_frozen_adapter_trained(cascade, extractor):
    trainable = {id(p) for p in cascade.trainable_parameters()}
    assert all(id(p) in trainable for p in cascade.adapter.parameters())
    assert not any(id(p) in trainable for p in extractor.parameters())
    assert not any(p.requires_grad for p in extractor.parameters())
    assert isinstance(cascade.sam.image_encoder, FrameOnly)
    with pytest.raises(RuntimeError, match="no image encoder of its own"):
        cascade.sam.image_encoder(torch.zeros(1, 3, 64, 64))


def test_with_prompt_shares_every_trained_module(cascade):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    raw = cascade.embed(images)
    same = cascade.with_prompt(cascade.cfg.prompt)
    assert same.adapter is cascade.adapter and same.encoder is cascade.encoder and same.decoder is cascade.decoder
    torch.testing.assert_close(same(raw, _masks(), 64).logits, cascade(raw, _masks(), 64).logits)
    box = cascade.with_prompt("box")
    assert box.cfg.prompt == "box" and cascade.cfg.prompt != "box" and box.adapter is cascade.adapter
    assert box(raw, _masks(), 64).mask.shape == (2, 64, 64)


def test_stand_in_without_a_timm_backbone_needs_the_extractor():
    with pytest.raises(ValueError, match="needs fewshot.backbone 'timm'"):
        build_cascade(PROFILE)
