import pytest
import torch

from samllava.assets import weights
from samllava.coarse.otsu import otsu_masks
from samllava.coarse.stage import CoarseLocalizer, build_coarse, knn_anomaly_map
from samllava.coarse.zero_shot import TextCache
from samllava.core.config import load_profile


@pytest.fixture(scope="module")
def tiny_coarse(tiny_profile):
    torch.manual_seed(0)
    localizer, tokenizer = build_coarse(tiny_profile)
    return localizer


@pytest.fixture(scope="module")
def tiny_text(tiny_coarse):
    return TextCache(tiny_coarse.zero_shot).get("bottle")  # this CLIP's own text features


def test_zero_shot_only(tiny_coarse, tiny_text):
    tiny_coarse.clear_support()
    x = torch.rand(2, 3, 64, 64)
    out = tiny_coarse(x, tiny_text)
    heatmap, score = tiny_coarse.zero_shot(x, tiny_text)
    assert out.lam is None and torch.equal(out.calibrated, heatmap) and torch.equal(out.heatmap, heatmap)
    assert torch.equal(out.score, score)
    assert out.mask.dtype == torch.bool and torch.equal(out.mask, otsu_masks(heatmap))
    assert out.terms["zero_shot"].startswith("active: no support set") and "random weights" in out.terms["zero_shot"]
    assert out.terms["few_shot"] == "inactive: no support set"
    with pytest.raises(ValueError, match="text_feats"):
        tiny_coarse(x)


def test_few_shot_modulates_heatmap(tiny_coarse, tiny_text):
    support, x = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64)
    tiny_coarse.set_support(support)
    try:
        out = tiny_coarse(x, tiny_text)
        lam = tiny_coarse.calibrator(x).lam
        assert torch.allclose(out.lam, lam) and torch.allclose(out.calibrated, out.heatmap * lam)  # Eq. 2
        s_ctx = tiny_coarse.calibrator(x).s_ctx
        decision = s_ctx + out.heatmap.log() / 4.0  # beta (D - 1) = log H + logit Lambda: H' in odds form
        assert torch.allclose(out.score, decision.flatten(1).amax(1))
        assert torch.allclose(out.log_map.exp(), out.calibrated)
        assert out.calibrated.shape == out.mask.shape == (3, 64, 64)
        assert out.terms["few_shot"] == "active: CLIP blocks (1, 3, 4), K=2"
        assert out.terms["zero_shot"].startswith("active: H' = H * Lambda")
        with pytest.raises(ValueError, match="support set was 64 px"):
            tiny_coarse(torch.rand(1, 3, 32, 32), tiny_text)
    finally:
        tiny_coarse.clear_support()
    assert tiny_coarse(x, tiny_text).lam is None


def test_inactive_zero_shot_uses_lambda(tiny_coarse):
    localizer = CoarseLocalizer(zero_shot=tiny_coarse.zero_shot, calibrator=tiny_coarse.calibrator,
                                use_zero_shot=False, clip_label="random CLIP")
    localizer.set_support(torch.rand(1, 3, 64, 64))
    try:
        x = torch.rand(2, 3, 64, 64)
        out = localizer(x)  # no text needed: H := 1
        assert out.heatmap is None and torch.allclose(out.calibrated, out.lam)
        s_ctx = localizer.calibrator(x).s_ctx
        assert torch.equal(out.score, s_ctx.flatten(1).amax(1))  # the decision map is s_ctx itself
        assert torch.allclose(torch.sigmoid(4.0 * (out.score - 1)), out.lam.flatten(1).amax(1))
        assert out.terms["zero_shot"] == "inactive: use_zero_shot=false, H := 1 (random CLIP)"
    finally:
        localizer.clear_support()
    bare = CoarseLocalizer(zero_shot=tiny_coarse.zero_shot)
    with pytest.raises(ValueError, match="no few-shot calibrator"):
        bare.set_support(torch.rand(1, 3, 64, 64))


def test_knn_baseline_on_tiny_backbone(tiny_coarse):
    support = torch.rand(2, 3, 64, 64)
    maps, scores = knn_anomaly_map(
        tiny_coarse.calibrator.extractor, support, torch.cat([support[:1], torch.rand(1, 3, 64, 64)])
    )
    assert maps.shape == (2, 64, 64) and scores.shape == (2,)
    assert maps[0].abs().max() < 1e-4 and scores[1] > scores[0]  # a support image is at distance 0


def test_offline_profile_builds_with_packaged_backbone():
    localizer, _ = build_coarse(load_profile("offline"))
    assert "efficientnet_lite0" in localizer.calibrator.extractor.label and not localizer.use_zero_shot


def test_paper_profile_never_runs_random(monkeypatch, tmp_path):
    profile = load_profile("paper")
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(weights.spec("clip_vit_b16_laion400m").env, raising=False)
    with pytest.raises(weights.MissingWeightsError, match="clip_vit_b16_laion400m"):
        build_coarse(profile)
    with pytest.raises(ValueError, match="fewshot.image_size 224 must equal clip.image_size 64"):
        build_coarse(load_profile("tiny").replace(**{"fewshot.image_size": 224}))


def test_scores_do_not_tie_when_lambda_saturates(tiny_coarse):
    """Lambda rounds to 1.0 in float32 far from the memory; the log-space score still ranks."""
    localizer = CoarseLocalizer(zero_shot=tiny_coarse.zero_shot, calibrator=tiny_coarse.calibrator, use_zero_shot=False)
    localizer.calibrator.sharpness = 200.0  # saturate on purpose
    try:
        localizer.set_support(torch.rand(1, 3, 64, 64))
        x = torch.rand(4, 3, 64, 64)
        out = localizer(x)
        assert (out.lam.flatten(1).amax(1) == 1.0).all()  # saturated...
        assert len(set(out.score.tolist())) == 4  # ...but the scores still differ
    finally:
        localizer.calibrator.sharpness = 4.0
        localizer.clear_support()


def test_verdict_judges_normal_images_normal_and_masks_only_flagged_ones(tiny_coarse, tiny_text):
    support = 0.5 + 0.02 * torch.randn(4, 3, 64, 64)  # smooth grey surfaces
    tiny_coarse.set_support(support)
    try:
        normal = 0.5 + 0.02 * torch.randn(3, 3, 64, 64)  # fresh draws of the same surface
        out = tiny_coarse(normal, tiny_text)
        assert not out.defective.any() and not out.mask.any()
        assert out.verdict.n_normals == 4 and "image threshold" in out.terms["verdict"]
        odd = normal[:1].clone()
        checker = ((torch.arange(32)[:, None] // 2 + torch.arange(32)[None, :] // 2) % 2).float()
        odd[:, :, 16:48, 16:48] = checker  # a large high-contrast foreign patch
        out = tiny_coarse(odd, tiny_text)
        assert out.defective.tolist() == [True] and out.score[0] > out.verdict.image
        assert out.mask[0, 16:48, 16:48].float().mean() > out.mask[0].float().mean() > 0
        assert otsu_masks(tiny_coarse(normal, tiny_text).calibrated).any()  # Otsu alone splits even a normal image
    finally:
        tiny_coarse.clear_support()
