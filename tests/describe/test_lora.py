import dataclasses
import json
import math
import re

import pytest
import torch

from samllava.core.config import LoraSettings, load_profile
from samllava.describe.build import build_describer
from samllava.describe.lora import (
    apply_lora, load_lora, merge_lora, paper_parameter_counts, parameter_counts, save_lora, target_regex,
)


def _lora_modules(model):
    return {
        n: m for n, m in model.named_modules() if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict)
    }


def test_regex_targets_the_language_model_only(describer):
    rx = target_regex(("q_proj", "v_proj"))
    names = [n for n, _ in describer.llava.named_modules()]
    q_proj = [n for n in names if n.endswith(".q_proj")]
    assert any(".vision_tower." in n for n in q_proj)  # plain names would hit the vision tower
    assert [n for n in names if re.fullmatch(rx, n)] == [
        n for n in names if ".language_model." in n and n[-6:] in ("q_proj", "v_proj")
    ]
    assert re.fullmatch(rx, "model.language_model.layers.11.self_attn.q_proj")
    assert not re.fullmatch(rx, "model.language_model.layers.0.self_attn.k_proj")
    with pytest.raises(ValueError):
        target_regex(())


def test_apply_lora_wraps_only_language_model_targets_and_freezes_the_rest(describer, tiny):
    apply_lora(describer, tiny.lora)
    wrapped = _lora_modules(describer.model)
    n_layers = tiny.llm.text_config["num_hidden_layers"]
    assert len(wrapped) == n_layers * len(tiny.lora.targets)
    assert all(".language_model." in n and n.rsplit(".", 1)[1] in tiny.lora.targets for n in wrapped)
    trainable = [n for n, p in describer.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    llava = describer.llava
    for part in (
        llava.model.vision_tower,
        llava.model.multi_modal_projector,
        llava.get_input_embeddings(),
        llava.lm_head,
    ):
        assert not any(p.requires_grad for p in part.parameters())
    with pytest.raises(ValueError, match="already"):
        apply_lora(describer, tiny.lora)


def test_paper_init_kaiming_normal_a_zero_b(tiny):
    d = apply_lora(build_describer(tiny), dataclasses.replace(tiny.lora, r=16))
    by_fan_in: dict[int, list[torch.Tensor]] = {}
    for m in _lora_modules(d.model).values():
        a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
        assert torch.count_nonzero(b) == 0
        by_fan_in.setdefault(a.shape[1], []).append(a.detach().flatten())
    for fan_in, ws in by_fan_in.items():
        w = torch.cat(ws)
        # Kaiming normal: std sqrt(2 / fan_in); peft's Kaiming-uniform default would give 1 / sqrt(3 fan_in)
        assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.08)
        assert w.abs().max() > 1 / math.sqrt(fan_in)  # beyond the uniform bound: not uniform


def test_logits_before_training_equal_base_model(describer, tiny, batch):
    describer.eval()
    base = describer(*batch).logits
    apply_lora(describer, tiny.lora).eval()
    assert torch.equal(describer(*batch).logits, base)


def test_training_moves_lora_only_and_lowers_the_loss(describer, tiny, batch):
    apply_lora(describer, tiny.lora)
    frozen = {n: p.detach().clone() for n, p in describer.named_parameters() if not p.requires_grad}
    opt = torch.optim.Adam([p for p in describer.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss = describer.loss(*batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    assert all(torch.equal(p, frozen[n]) for n, p in describer.named_parameters() if n in frozen)
    assert any(torch.count_nonzero(m.lora_B["default"].weight) for m in _lora_modules(describer.model).values())
    # loss() runs the base LLaVA's modules directly: the trained adapters must be in it (as in peft's forward)
    describer.eval()
    torch.testing.assert_close(describer.loss(*batch), describer(*batch).loss)
    assert abs(describer.loss(*batch).item() - losses[0]) > 0.3


def test_tiny_parameter_counts_by_hand(describer, tiny):
    base_total = sum(p.numel() for p in describer.parameters())
    t, r = tiny.llm.text_config, tiny.lora.r
    kv = t["num_key_value_heads"] * t["hidden_size"] // t["num_attention_heads"]
    h, f = t["hidden_size"], t["intermediate_size"]
    per_layer = r * ((h + h) + (h + kv) + 3 * (h + f))  # q, v, gate, up, down: r * (in + out) each
    expected_lora = t["num_hidden_layers"] * per_layer
    counts = parameter_counts(apply_lora(describer, tiny.lora).model)
    assert counts == {"total": base_total + expected_lora, "trainable": expected_lora, "lora": expected_lora}


def test_paper_parameter_counts_without_weights():
    counts = paper_parameter_counts()
    # r * (in + out) for q, v (4096 -> 4096), gate, up (4096 -> 11008), down (11008 -> 4096), over 32 layers
    hand = 32 * 16 * (2 * (4096 + 4096) + 3 * (4096 + 11008))
    assert hand == 31_588_352 and counts["lora"] == hand
    assert round(counts["lora"] / 1e6, 2) == 31.59  # the paper's "31.59M" LoRA parameters (Sec. 5.4)
    assert counts["trainable"] == counts["lora"]
    # the published size of llava-hf/llava-1.5-7b-hf; its language model by hand (untied lm_head)
    assert counts["total"] - counts["lora"] == 7_063_427_072
    lm = 2 * 32064 * 4096 + 32 * (4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096) + 4096
    # CLIP-L/336 + projector
    assert (
        lm == 6_738_939_904 and counts["total"] - counts["lora"] - lm == 303_507_456 + 20_979_712
    )


def test_save_load_round_trip(tiny, batch, tmp_path):
    trained = apply_lora(build_describer(tiny), tiny.lora)
    for m in _lora_modules(trained.model).values():
        torch.nn.init.normal_(m.lora_B["default"].weight, std=0.1)  # as if trained
    path = save_lora(trained, tmp_path / "adapter")
    assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] == trained.base_id
    torch.manual_seed(123)  # the global RNG does not matter: builds are seeded
    fresh = build_describer(tiny)
    trained.eval()
    base_logits = fresh.eval()(*batch).logits
    loaded = load_lora(fresh, path).eval()
    logits = loaded(*batch).logits
    assert not torch.allclose(logits, base_logits)
    torch.testing.assert_close(logits, trained(*batch).logits)
    assert all(".lora_" in n for n, p in loaded.named_parameters() if p.requires_grad)


def test_adapter_for_another_base_is_refused(describer, tiny, tmp_path):
    path = save_lora(apply_lora(describer, tiny.lora), tmp_path / "adapter")
    other = tiny.replace(**{"llm.text_config": {**tiny.llm.text_config, "hidden_size": 32}})
    with pytest.raises(ValueError, match="trained on base model .* this describer's base model is"):
        load_lora(build_describer(other), path)
    # same base, other rank: the shapes do not fit
    with pytest.raises(ValueError, match="does not fit"):
        load_lora(apply_lora(build_describer(tiny), dataclasses.replace(tiny.lora, r=2)), path)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_lora(build_describer(tiny), tmp_path / "nothing")


def test_bad_settings(describer):
    with pytest.raises(ValueError, match="not found in the base model"):
        apply_lora(describer, LoraSettings(r=2, alpha=4, targets=("no_such_proj",)))
    with pytest.raises(ValueError, match="no LoRA adapters"):
        save_lora(describer, "/tmp/never-written")


def test_paper_profile_lora_settings_are_the_papers():
    lora = load_profile("paper").lora
    assert (lora.r, lora.alpha, set(lora.targets)) == (
        16,
        32,
        {"q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"},
    )


def test_merge_lora_folds_the_adapters_in_once_and_keeps_the_logits(tiny, batch):
    d = apply_lora(build_describer(tiny), tiny.lora)
    modules = _lora_modules(d.model)
    for m in modules.values():
        torch.nn.init.normal_(m.lora_B["default"].weight, std=0.1)  # as if trained
    d.eval()
    before = d(*batch).logits
    name, layer = next(iter(modules.items()))
    w0 = layer.base_layer.weight.detach().clone()
    delta = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    merge_lora(d)
    merge_lora(d)  # already merged: nothing is added twice
    torch.testing.assert_close(layer.base_layer.weight.detach(), w0 + delta.detach())
    assert all(m.merged for m in modules.values())
    torch.testing.assert_close(d(*batch).logits, before, rtol=1e-4, atol=1e-4)
    plain = build_describer(tiny).eval()
    base = plain(*batch).logits
    assert torch.equal(merge_lora(plain)(*batch).logits, base)  # no adapters: unchanged
