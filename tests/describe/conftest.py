import pytest
import torch

from samllava.core.config import load_profile
from samllava.describe.build import build_describer
from samllava.describe.llava import Describer


@pytest.fixture
def tiny():
    return load_profile("tiny")


@pytest.fixture
def describer(tiny) -> Describer:
    return build_describer(tiny)


@pytest.fixture
def batch(describer):
    """Four fixed examples: two share a question and differ only in the image / SASA tokens."""
    g = torch.Generator().manual_seed(1)
    s = describer.image_size
    pixels = torch.rand(4, 3, s, s, generator=g)
    sasa = torch.randn(4, 5, describer.llm_dim, generator=g)
    questions = ["Is there any anomaly in the image?"] * 2 + ["Describe the defect.", "Where is the defect?"]
    answers = ["No.", "Yes, there is a crack.", "A thin black scratch.", "At the top left."]
    return pixels, sasa, questions, answers
