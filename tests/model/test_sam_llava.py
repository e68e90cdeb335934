"""The assembled model (tiny profile): frozen vs trainable parts, Eq. 9, diagnose()."""
import numpy as np
import pytest
import torch

from samllava.core.config import load_profile
from samllava.model.sam_llava import build_model, state_tokens
from samllava.diagnose.report import report_fields
from samllava.coarse.prompts import ANOMALOUS_STATES, NORMAL_STATES, TEMPLATES


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(load_profile("tiny"))


def test_trainable_parts_are_those_of_sec_3_5(model):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith(("cascade.", "sasa.", "describer.")) for n in names)
    assert not any(n.startswith("cascade.sam.image_encoder") for n in names)
    assert not any(n.startswith("coarse.") for n in names)
    desc = [n for n in names if n.startswith("describer.")]
    assert desc and all("lora_" in n for n in desc)  # only LoRA in LLaVA: vision tower, projector, base frozen
    assert any(n.startswith("cascade.sam.mask_decoder") for n in names)
    assert any(n.startswith("cascade.prompt_learner") for n in names)


def test_state_tokens_average_templates():
    d = 4
    emb = torch.randn((len(NORMAL_STATES) + len(ANOMALOUS_STATES)) * len(TEMPLATES), d)
    tok = state_tokens(emb)
    assert tok.shape == (len(NORMAL_STATES) + len(ANOMALOUS_STATES), d)
    first = torch.nn.functional.normalize(emb[: len(TEMPLATES)].mean(0), dim=0)
    torch.testing.assert_close(tok[0], first)


def test_loss_is_eq9_and_reaches_sam(model):
    p = model.profile
    s = p.data.image_size
    images = torch.rand(2, 3, s, s)
    enc = model.encode(images, "fabric")
    gt = torch.zeros(2, s, s)
    gt[0, 10:20, 10:20] = 1
    model.zero_grad()
    losses = model(enc, gt, ["Is there any anomaly?"] * 2, ["Yes.", "No."])
    torch.testing.assert_close(losses.total, p.train.seg_weight * losses.seg + p.train.gen_weight * losses.gen)
    losses.gen.backward()  # the language loss alone must reach SAM's decoder (straight-through mask)
    grads = [
        q.grad for n, q in model.named_parameters() if n.startswith("cascade.sam.mask_decoder") and q.requires_grad
    ]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(q.grad is None for q in model.coarse.parameters())


def test_text_computed_once_per_category(model):
    model.text_cache.clear()
    model.text("bottle_cap")
    model.text("bottle_cap")
    model.text(None)
    assert len(model.text_cache) == 2


def test_diagnose_outputs(model):
    s = model.profile.data.image_size
    out = model.diagnose(torch.rand(2, 3, s, s), category=None, max_new_tokens=4)
    assert len(out) == 2
    d = out[0]
    assert d.heatmap.shape == d.fine_mask.shape == d.coarse_mask.shape == (s, s)
    assert d.fine_mask.dtype == np.bool_
    assert d.answer in {"yes", "no", "unclear"} and isinstance(d.description, str)
    r = report_fields(d)
    assert {"answer", "description", "score", "category"} <= set(r)
    assert r["category"] == "object"
    support = torch.rand(1, 3, s, s)
    few = model.diagnose(torch.rand(3, 3, s, s), "fabric", support, max_new_tokens=2)
    assert few[0].terms["few_shot"].startswith("active")
    # llm.answer_from_verdict (tiny, offline): the answer's yes/no is the calibrated verdict's
    assert model.profile.llm.answer_from_verdict
    assert [d.answer for d in few] == [{"defective": "yes", "normal": "no"}[d.verdict] for d in few]


def test_the_category_is_named_as_the_user_gives_it(model):
    assert model.phrase("my_widget") == "my widget"  # not a data set's category: the user's words
    assert model.phrase("metal_nut") == "metal nut"  # a data set's own phrase
    assert model.phrase(None) == model.phrase("  ") == "object"  # none given: the generic object


def test_sasa_cell_words_start_as_the_language_models_embeddings_of_the_position_words():
    m = build_model(load_profile("tiny"))
    names = m.sasa.cell_position_names()
    table = m.describer.llava.get_input_embeddings().weight
    ids = m.describer.tokenizer(f" {names[0]}", add_special_tokens=False)["input_ids"]  # " top left"
    torch.testing.assert_close(m.sasa.cell_words[0], table[ids].mean(0))
    torch.testing.assert_close(m.sasa.cell_words[1], m.sasa.cell_words[2])  # both "top"
    assert not torch.allclose(m.sasa.cell_words[0], m.sasa.cell_words[1])
    assert m.sasa.cell_words.requires_grad and any(q is m.sasa.cell_words for q in m.trainable_parameters())


def test_questions_start_with_the_measured_facts(model):
    from samllava.data.instructions import QUESTION

    s = model.profile.data.image_size
    images = torch.full((2, 3, s, s), 0.5)
    mask = torch.zeros(2, s, s, dtype=torch.bool)
    mask[0, : s // 4, : s // 4] = True  # centre of mass in the top-left ninth
    images[0, :, : s // 4, : s // 4] = 0.1  # and darker than the grey around it
    asked = [QUESTION.format(category="brick wall")] * 2
    facts = model.facts(images, mask, asked)
    assert [f.subject for f in facts] == ["a brick wall"] * 2 and facts[0].tone == "darker"
    q = model.grounded_questions(asked, facts)
    # a quarter of the side squared: 6.25 % of the image, "large"; a square is "round"
    assert q == ["The image is mostly grey. The segmentation marks a large round region at the top left of the "
                 "image, darker than its surroundings. " + asked[0],
                 "The image is mostly grey. The segmentation marks no region. " + asked[1]]
    with pytest.raises(ValueError, match="2 questions for 2 images and 1 masks"):
        model.facts(images, mask[:1], asked)


def test_training_loss_reads_the_region_of_the_predicted_mask(model):
    # Eq. 10 inside Eq. 9 is computed on the questions grounded by M_fine (the model's own mask), not the ground truth
    s = model.profile.data.image_size
    model.eval()
    enc = model.encode(torch.rand(2, 3, s, s), "fabric")
    gt = torch.zeros(2, s, s)
    gt[:, -8:, -8:] = 1  # bottom right in the ground truth
    questions, answers = ["Is there any anomaly?"] * 2, ["Yes.", "No."]
    with torch.no_grad():
        losses = model(enc, gt, questions, answers)
        fine = model.fine(enc)
        grounded = model.grounded_questions(questions, model.facts(enc.images, fine.mask, questions))
        expected = model.describer.loss(enc.visual, model.align(enc, fine), grounded, answers)
        from_gt = model.grounded_questions(questions, model.facts(enc.images, gt, questions))
        gen_from_gt = model.describer.loss(enc.visual, model.align(enc, fine), from_gt, answers)
    torch.testing.assert_close(losses.gen, expected)
    assert grounded != from_gt and not torch.allclose(losses.gen, gen_from_gt)


def test_fine_mask_follows_the_verdict():
    from samllava.coarse import CoarseOutput
    from samllava.model.sam_llava import gate_fine_mask

    fine = torch.zeros(3, 4, 4, dtype=torch.bool)
    fine[0, 0, 0] = fine[2, 3, 3] = True  # SAM found something on images 0 and 2, nothing on image 1
    coarse_mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    coarse_mask[1, 1:3, 1:3] = True
    z = torch.zeros(3, 4, 4)
    coarse = CoarseOutput(heatmap=None, lam=z, calibrated=z, mask=coarse_mask, log_map=z, score=torch.zeros(3),
                          defective=torch.tensor([True, True, False]), terms={})
    gated = gate_fine_mask(fine, coarse)
    assert torch.equal(gated[0], fine[0])  # flagged, SAM's mask kept
    assert torch.equal(gated[1], coarse_mask[1])  # flagged, SAM empty: M'_coarse
    assert not gated[2].any()  # judged normal: no region, whatever SAM drew
    coarse.defective = None  # zero-shot: no verdict, SAM's mask as it is
    assert torch.equal(gate_fine_mask(fine, coarse), fine)
