import dataclasses

import pytest
import torch

from samllava.core.config import SasaConfig, load_profile
from samllava.data.instructions import POSITIONS
from samllava.describe.sasa import Sasa

C, DT, LLM = 12, 10, 24


def make(enabled: bool = True, **kw) -> Sasa:
    cfg = SasaConfig(enabled=enabled, align_dim=16, num_heads=4, num_layers=2, grid=4, **kw)
    return Sasa(cfg, vis_dim=C, text_dim=DT, llm_dim=LLM).eval()


def test_shapes_and_attention_rows():
    sasa = make()
    feats, mask, text = torch.randn(3, C, 8, 8), (torch.rand(3, 32, 32) > 0.5).float(), torch.randn(3, 5, DT)
    out = sasa(feats, mask, text)
    assert out.tokens.shape == (3, 4 * 4 + 5, LLM) and sasa.num_tokens(5) == 21
    assert len(out.attn) == 2
    for maps in out.attn:
        assert maps["v2t"].shape == (3, 16, 5) and maps["t2v"].shape == (3, 5, 16)
        torch.testing.assert_close(maps["v2t"].sum(-1), torch.ones(3, 16))
        assert (maps["t2v"].sum(-1) <= 1 + 1e-6).all()  # the rest of each row is on the null slot
        assert all((w >= 0).all() for w in maps.values())


def test_text_of_batch_one_is_shared():
    sasa = make()
    feats, mask, text = torch.randn(2, C, 8, 8), torch.ones(2, 8, 8), torch.randn(1, 3, DT)
    torch.testing.assert_close(sasa(feats, mask, text).tokens, sasa(feats, mask, text.expand(2, -1, -1)).tokens)


def test_visual_tokens_hand_computed():
    sasa = make()
    feats = torch.arange(C, dtype=torch.float32).view(1, C, 1, 1).expand(1, C, 8, 8).clone()  # channel c holds c
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1  # left half of the image
    mask[:, :4, :4] = 0.5  # soft value on the top-left 2x2 feature cells
    v = sasa.visual_tokens(feats, mask).view(1, 4, 4, C)  # grid 4x4 over 8x8 features: 2x2 cells each
    # each cell holds the mean feature inside the mask (constant c here, soft or not), 0 without mask
    expected_scale = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]])
    torch.testing.assert_close(v, expected_scale[None, :, :, None] * torch.arange(C, dtype=torch.float32))


def test_small_defect_keeps_its_feature_magnitude():
    """A mask on one feature position of a 2x2 cell gives that position's feature, not a quarter of it."""
    sasa = make()
    feats = torch.zeros(1, C, 8, 8)
    feats[0, :, 0, 0] = 4.0
    mask = torch.zeros(1, 8, 8)
    mask[0, 0, 0] = 1
    v = sasa.visual_tokens(feats, mask).view(1, 4, 4, C)
    torch.testing.assert_close(v[0, 0, 0], torch.full((C,), 4.0))
    assert v[0].flatten(0, 1)[1:].abs().sum() == 0


def test_features_outside_mask_do_not_change_output():
    sasa = make()
    feats, text = torch.randn(2, C, 8, 8), torch.randn(2, 4, DT)
    mask = torch.zeros(2, 64, 64)
    mask[:, 8:40, 16:48] = 1  # covers feature cells rows 1..4, cols 2..5 exactly (8 px per cell)
    other = feats.clone()
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[1:5, 2:6] = False
    other[:, :, outside] += 100 * torch.randn(2, C, int(outside.sum()))
    torch.testing.assert_close(sasa(feats, mask, text).tokens, sasa(other, mask, text).tokens)
    inside = feats.clone()
    inside[:, :, 2, 3] += 10
    assert not torch.allclose(sasa(feats, mask, text).tokens, sasa(inside, mask, text).tokens)


def test_empty_mask_gives_zero_visual_features():
    sasa = make()
    feats, text = torch.randn(1, C, 8, 8), torch.randn(1, 2, DT)
    empty = torch.zeros(1, 20, 20)
    assert torch.equal(sasa.visual_tokens(feats, empty), torch.zeros(1, 16, C))
    out = sasa(feats, empty, text).tokens
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, sasa(torch.randn_like(feats), empty, text).tokens)


def test_disabled_is_plain_concatenation_of_projections():
    sasa = make(enabled=False)
    feats, mask, text = torch.randn(2, C, 8, 8), torch.rand(2, 8, 8), torch.randn(2, 3, DT)
    out = sasa(feats, mask, text)
    assert out.attn == [] and len(sasa.layers) == 0
    v0 = sasa.proj_v(sasa.visual_tokens(feats, mask))
    expected = torch.cat([sasa.out_v(v0), sasa.out_t(sasa.proj_t(text))], dim=1)
    torch.testing.assert_close(out.tokens, expected)
    assert out.tokens.shape == make()(feats, mask, text).tokens.shape


def test_eq7_eq8_order_text_attends_to_updated_visual_tokens():
    # Eq. 8 uses V' (after Eq. 7): replacing the text->vision keys with V_0 must change T'.
    sasa = make()
    layer = sasa.layers[0]
    v, t, present = torch.randn(1, 16, 16), torch.randn(1, 3, 16), torch.ones(1, 16, dtype=torch.bool)
    _, t_new, _ = layer(v, t, present, sasa.null)
    v_prime = layer.norm_v(v + layer.v2t(v, t, t)[0])
    keys = torch.cat([v_prime, sasa.null], dim=1)
    t_expected = layer.norm_t(t + layer.t2v(t, keys, keys)[0])
    torch.testing.assert_close(t_new, t_expected)
    wrong = torch.cat([v, sasa.null], dim=1)
    t_wrong = layer.norm_t(t + layer.t2v(t, wrong, wrong)[0])
    assert not torch.allclose(t_new, t_wrong)


def test_gradients_reach_all_parameters():
    sasa = make().train()
    out = sasa(torch.randn(2, C, 8, 8), torch.ones(2, 8, 8), torch.randn(2, 3, DT))
    out.tokens.square().mean().backward()
    missing = [n for n, p in sasa.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_tiny_profile_builds():
    cfg = load_profile("tiny").sasa
    sasa = Sasa(cfg, vis_dim=C, text_dim=DT, llm_dim=LLM)
    assert len(sasa.layers) == cfg.num_layers
    out = sasa(torch.randn(1, C, 16, 16), torch.ones(1, 64, 64), torch.randn(1, 2, DT))
    assert out.tokens.shape == (1, cfg.grid**2 + 2, LLM)


@pytest.mark.parametrize(
    "bad, call",
    [
        ({"align_dim": 15}, None),
        (None, lambda s: s(torch.randn(1, C + 1, 8, 8), torch.ones(1, 8, 8), torch.randn(1, 2, DT))),
        (None, lambda s: s(torch.randn(2, C, 8, 8), torch.ones(3, 8, 8), torch.randn(2, 2, DT))),
        (None, lambda s: s(torch.randn(2, C, 8, 8), torch.ones(2, 8, 8), torch.randn(3, 2, DT))),
        (None, lambda s: s(torch.randn(1, C, 8, 8), torch.ones(1, 8, 8), torch.randn(1, 2, DT + 1))),
    ],
)
def test_bad_input_raises_value_error(bad, call):
    with pytest.raises(ValueError):
        if bad is not None:
            Sasa(dataclasses.replace(SasaConfig(num_heads=4), **bad), C, DT, LLM)
        else:
            call(make())


def test_text_attends_to_the_masks_cells_and_the_null_slot():
    """Eq. 8: T' attends to the cells holding M_fine and the learned null slot only."""
    sasa = make()
    feats, text = torch.randn(2, C, 8, 8), torch.randn(2, 3, DT)
    mask = torch.zeros(2, 8, 8)
    mask[0, 0, 0] = 1  # one feature position: cell (0, 0) of the 4x4 grid
    present = sasa.present_cells(feats, mask)
    assert present[0].tolist() == [True] + [False] * 15 and not present[1].any()
    out = sasa(feats, mask, text)
    t2v = out.attn[0]["t2v"]  # (B, N_t, 16): cell columns only
    assert (t2v[0, :, 1:] == 0).all() and (t2v[0, :, 0] > 0).all() and (t2v[0].sum(-1) < 1).all()
    assert (t2v[1] == 0).all()  # an empty mask attends to the null slot alone
    # by hand, layer 1: keys = [V'_cell0, null]
    layer = sasa.layers[0]
    v0, t0 = sasa.proj_v(sasa.visual_tokens(feats, mask)), sasa.proj_t(text)
    v1 = layer.norm_v(v0 + layer.v2t(v0, t0, t0)[0])
    keys = torch.cat([v1[:1, :1], sasa.null], dim=1)
    t1 = layer.norm_t(t0[:1] + layer.t2v(t0[:1], keys, keys)[0])
    _, t_layer, _ = layer(v0, t0, present, sasa.null)
    torch.testing.assert_close(t_layer[:1], t1)


def test_cell_position_names_follow_the_3x3_grid_of_the_data():
    names = make().cell_position_names()
    assert names == ["top left", "top", "top", "top right", "left", "center", "center", "right",
                     "left", "center", "center", "right", "bottom left", "bottom", "bottom", "bottom right"]
    three = Sasa(SasaConfig(grid=3, align_dim=16, num_heads=4), vis_dim=C, text_dim=DT, llm_dim=LLM)
    assert three.cell_position_names() == list(POSITIONS)  # a 3x3 grid is the data's grid
    # build_model may run under another default device (the GPU benchmark builds under torch.device("cuda")):
    # the names are still read on the CPU (meta stands in for cuda here; numpy can read neither)
    with torch.device("meta"):
        assert three.cell_position_names() == list(POSITIONS)


def test_cell_words_are_added_to_the_cells_that_hold_the_mask_only():
    torch.manual_seed(0)
    plain = make()  # cell words start at zero until set_cell_words
    torch.manual_seed(0)
    worded = make()
    words = torch.randn(16, LLM)
    worded.set_cell_words(words)
    feats, text = torch.randn(2, C, 8, 8), torch.randn(1, 3, DT)
    mask = torch.zeros(2, 8, 8)
    mask[0, 0:2, 0:2] = 1  # cell 0
    mask[0, 6, 3] = 1  # cell 13 ("bottom")
    diff = worded(feats, mask, text).tokens - plain(feats, mask, text).tokens
    want = torch.zeros(2, 16 + 3, LLM)
    want[0, 0], want[0, 13] = words[0], words[13]
    torch.testing.assert_close(diff, want)  # nothing for an empty mask, nothing on T'
    with pytest.raises(ValueError, match=r"\(16, 24\)"):
        worded.set_cell_words(torch.zeros(9, LLM))
