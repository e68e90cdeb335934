import pytest
import torch

from samllava.coarse.clip_model import build_clip
from samllava.coarse.zero_shot import ZeroShotLocalizer
from samllava.core.config import load_profile


@pytest.fixture(scope="session")
def tiny_profile():
    return load_profile("tiny")


@pytest.fixture(scope="session")
def tiny_clip(tiny_profile):
    torch.manual_seed(0)
    return build_clip(tiny_profile.clip, None)  # (model, tokenizer)


@pytest.fixture(scope="session")
def tiny_zero_shot(tiny_profile, tiny_clip):
    model, tokenizer = tiny_clip
    return ZeroShotLocalizer(model, tokenizer, tiny_profile.clip)


@pytest.fixture(scope="session")
def tiny_text(tiny_zero_shot):
    from samllava.coarse.zero_shot import TextCache

    return TextCache(tiny_zero_shot).get("bottle")  # (2, D)
