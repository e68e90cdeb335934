import json

import pytest
from transformers import AutoTokenizer

from samllava.assets import weights
import make_tiny_tokenizer
from samllava.describe.template import SYSTEM, build_example, build_prompt, check_length


def test_prompt_is_llava_15_format():
    p = build_prompt("Is there any defect?", 2, 3, system="")
    assert p == "USER: <image><image><sasa><sasa><sasa>\nIs there any defect? ASSISTANT:"
    assert build_prompt("Q?", 1, 0) == f"{SYSTEM} USER: <image>\nQ? ASSISTANT:"
    assert build_prompt("Q?", 1, 1, image_token="<i>", sasa_token="<s2>", system="") == "USER: <i><s2>\nQ? ASSISTANT:"


def test_example_appends_answer_and_eos():
    prompt, completion = build_example("Where?", " At the top. ", 4, 2, eos_token="</s>", system="")
    assert prompt == build_prompt("Where?", 4, 2, system="")
    assert completion == " At the top.</s>"


@pytest.mark.parametrize("call", [
    lambda: build_prompt("what is <image>?", 1, 1),
    lambda: build_prompt("what is <sasa>?", 1, 1),
    lambda: build_prompt("q", -1, 1),
    lambda: build_example("q", "  ", 1, 1, eos_token="</s>"),
])
def test_bad_template_input(call):
    with pytest.raises(ValueError):
        call()


def test_check_length_boundary():
    check_length(512, 512, "ok")
    with pytest.raises(ValueError, match="513 tokens exceeds .*max_position_embeddings=512"):
        check_length(513, 512, "x" * 1000)


def test_committed_tiny_tokenizer_matches_script_and_round_trips(tmp_path):
    folder = weights.resolve("tiny_tokenizer")
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.convert_ids_to_tokens(list(range(6))) == list(make_tiny_tokenizer.SPECIAL_TOKENS)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    assert 500 <= len(tok) <= 1000
    text = build_prompt("Is the zïpper OK? 42 µm, «new» words", 3, 2) + " Yes, a scratch.</s>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert ids.count(tok.convert_tokens_to_ids("<image>")) == 3 and ids.count(tok.convert_tokens_to_ids("<sasa>")) == 2
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    # domain words are single tokens (the corpus taught them)
    assert len(tok(" scratch", add_special_tokens=False)["input_ids"]) == 1
    # the committed files are what the script produces (deterministic training)
    out = make_tiny_tokenizer.write(tmp_path / "tok")
    assert json.loads((out / "tokenizer.json").read_text()) == json.loads((folder / "tokenizer.json").read_text())
