"""Seeded builders: the same component whoever builds it, whatever the global RNG state."""
import torch

from samllava.coarse import build_coarse
from samllava.core.config import load_profile
from samllava.model.sam_llava import build_model
from samllava.sam import build_cascade
from samllava.core.seeding import component_seed, seeded


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_seeded_restores_the_callers_rng_and_separates_components():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with seeded(0, "sam"):
        a = torch.rand(4)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream is untouched
    with seeded(0, "sam"):
        assert torch.equal(torch.rand(4), a)
    with seeded(0, "clip"):
        assert not torch.equal(torch.rand(4), a)
    assert component_seed(0, "sam") != component_seed(1, "sam")


def test_builders_agree_with_build_model():
    p = load_profile("tiny")
    torch.manual_seed(1)
    model = build_model(p)
    torch.manual_seed(2)  # a different global state must not matter
    assert _same(build_cascade(p), model.cascade)
    assert _same(build_coarse(p)[0], model.coarse)
    assert not _same(build_cascade(p, seed=1), model.cascade)


def test_a_training_seed_draws_what_learns_anew_and_keeps_the_coarse_stage():
    """train.seed 0 is the model `seed` builds; another training seed changes the parts that learn (SAM's
    decoder, SASA, LoRA) and leaves the coarse stage, which never trains, as it is."""
    p = load_profile("tiny")
    a, b = build_model(p), build_model(p.replace(**{"train.seed": 1}))
    assert _same(a.coarse, b.coarse)
    for part in ("cascade", "sasa"):
        assert not _same(getattr(a, part), getattr(b, part)), part
    lora = [k for k in a.describer.state_dict() if "lora_A" in k]
    assert lora and not torch.equal(a.describer.state_dict()[lora[0]], b.describer.state_dict()[lora[0]])
    assert _same(build_cascade(p.replace(**{"train.seed": 1})), b.cascade)  # the builders still agree
