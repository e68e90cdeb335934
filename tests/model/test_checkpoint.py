"""Loading a checkpoint for inference (tiny profile): LoRA folded in without peft gives the weights and
logits of peft's merge; a checkpoint whose adapters do not fit is refused, naming the file; the assembled model
kept on disk is read back only from the user's closed folder and built again when anything differs."""
import os
import shutil
import stat

import pytest
import torch

from samllava.core.config import load_profile
from samllava.describe.lora import merge_lora
from samllava.model.checkpoint import (
    DESCRIBER, WRAPPED, load_checkpoint, load_model, optimizer_state, save_checkpoint,
)
from samllava.model import checkpoint as checkpoint_mod
from samllava.model.sam_llava import build_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model whose trainable parts (LoRA B included, which starts at 0) are random, saved."""
    profile = load_profile("tiny")
    model = build_model(profile)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint(model, torch.optim.Adam(model.trainable_parameters()), 0, [], path)
    return profile, path


def _logits(model):
    d = model.describer
    gen = torch.Generator().manual_seed(1)
    size = d.llava.config.vision_config.image_size  # the tiny describer's CLIP tower reads pixels
    visual = torch.rand(2, 3, size, size, generator=gen)
    sasa = torch.randn(2, 3, d.llm_dim, generator=gen)
    return d(visual, sasa, ["Is there a defect?", "Is it broken?"], ["Yes, a scratch.", "No."]).logits


def test_folded_lora_gives_the_weights_and_logits_of_peft_merge(trained):
    profile, path = trained
    reference = build_model(profile)
    load_checkpoint(reference, path)
    merge_lora(reference.describer)
    loaded = load_model(profile, path, device="cpu")
    want = {k.replace(WRAPPED, DESCRIBER, 1).replace(".base_layer", ""): v for k, v in reference.state_dict().items()
            if ".lora_" not in k}
    got = loaded.state_dict()
    assert set(got) == set(want)
    for name, value in got.items():
        torch.testing.assert_close(value, want[name], rtol=1e-5, atol=1e-6, msg=name)
    lora_layers = [n for n, _ in reference.describer.named_modules() if n.endswith("lora_A")]
    assert lora_layers  # the comparison covered folded layers
    with torch.no_grad():
        torch.testing.assert_close(_logits(loaded), _logits(reference.eval()), rtol=1e-4, atol=1e-5)
    assert not any(".lora_" in n for n in loaded.trainable_state())
    assert loaded.describer.phrasebook == reference.describer.phrasebook


@pytest.mark.parametrize("change", ["drop", "rank"])
def test_adapters_that_do_not_fit_are_refused_naming_the_file(trained, tmp_path, change):
    profile, path = trained
    state = torch.load(path, weights_only=True)
    name = next(k for k in state["model"] if ".lora_A." in k)
    if change == "drop":
        del state["model"][name]
    else:
        state["model"][name] = state["model"][name][:1]
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=f"checkpoint {bad}: LoRA adapter"):
        load_model(profile, bad, device="cpu")


def test_the_assembled_model_is_kept_read_back_and_built_again_when_anything_differs(trained, tmp_path,
                                                                                      monkeypatch):
    profile, path = trained
    monkeypatch.setenv("SAMLLAVA_WEIGHTS_DIR", str(tmp_path / "cache"))
    ckpt = tmp_path / "run" / "last.pt"
    ckpt.parent.mkdir()
    shutil.copy(path, ckpt)
    builds = []
    real = checkpoint_mod.build_model
    monkeypatch.setattr(checkpoint_mod, "build_model", lambda *a, **k: builds.append(1) or real(*a, **k))
    first = load_model(profile, ckpt.parent, device="cpu", cache=True)  # a run's folder names its last.pt
    kept, = (tmp_path / "cache" / "assembled").iterdir()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    second = load_model(profile, ckpt, device="cpu", cache=True)
    assert builds == [1] and second is not first and not second.training
    want = first.state_dict()
    assert set(second.state_dict()) == set(want)
    for name, value in second.state_dict().items():
        assert torch.equal(value, want[name]), name
    with torch.no_grad():
        torch.testing.assert_close(_logits(second), _logits(first), rtol=0, atol=0)
    assert second.describer.phrasebook == first.describer.phrasebook
    del second  # its weights map the file

    kept.parent.chmod(0o770)  # a folder others may write in is not trusted: built, nothing written
    load_model(profile, ckpt, device="cpu", cache=True)
    assert builds == [1, 1] and list(kept.parent.iterdir()) == [kept]
    kept.parent.chmod(0o700)
    kept.write_bytes(b"not a torch file")  # unreadable: built again and kept anew
    load_model(profile, ckpt, device="cpu", cache=True)
    assert builds == [1, 1, 1] and kept.stat().st_size > 1000
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))  # the checkpoint rewritten
    load_model(profile, ckpt, device="cpu", cache=True)
    newer, = kept.parent.iterdir()  # the older file of the same checkpoint is gone
    assert builds == [1, 1, 1, 1] and newer != kept
    load_model(profile, ckpt, device="cpu")  # without cache=True nothing is read or written
    assert builds == [1, 1, 1, 1, 1] and list(kept.parent.iterdir()) == [newer]


def test_the_optimiser_state_comes_back_packed_or_as_written_before_packing(tmp_path):
    profile = load_profile("tiny")
    model = build_model(profile)
    params = list(model.trainable_parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    path = save_checkpoint(model, opt, 3, [{"step": 1}], tmp_path / "last.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["optimizer"].dtype == torch.uint8  # one record to unpickle when only the weights are needed
    unpacked = optimizer_state(state)
    state["optimizer"] = unpacked  # a checkpoint as written before the packing
    torch.save(state, tmp_path / "old.pt")
    for file in (path, tmp_path / "old.pt"):
        again = torch.optim.Adam(params, lr=1e-3)
        load_checkpoint(model, file, again)
        back = again.state_dict()["state"]
        assert back.keys() == unpacked["state"].keys() and len(back) == len(params)
        for i, s in unpacked["state"].items():
            torch.testing.assert_close(back[i]["exp_avg_sq"], s["exp_avg_sq"], rtol=0, atol=0)
