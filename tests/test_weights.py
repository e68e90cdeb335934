import pytest

from samllava import weights
from samllava.config import load_profile


def test_missing_weights_message_names_file_and_place(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv("SAMLLAVA_SAM_VIT_H", raising=False)
    with pytest.raises(weights.MissingWeightsError) as e:
        weights.resolve("sam_vit_h")
    msg = str(e.value)
    assert "sam_vit_h_4b8939.pth" in msg and str(tmp_path) in msg and "SAMLLAVA_SAM_VIT_H" in msg


def test_env_variable_and_cache(monkeypatch, tmp_path):
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    monkeypatch.setenv("SAMLLAVA_SAM_VIT_B", str(f))
    assert weights.resolve("sam_vit_b") == f
    monkeypatch.setenv("SAMLLAVA_SAM_VIT_B", str(tmp_path / "absent.pth"))
    with pytest.raises(weights.MissingWeightsError, match="absent.pth"):
        weights.resolve("sam_vit_b")
    monkeypatch.delenv("SAMLLAVA_SAM_VIT_B")
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"y")
    assert weights.resolve("sam_vit_b") == tmp_path / "sam_vit_b_01ec64.pth"


def test_packaged_efficientnet_found(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    path = weights.resolve("efficientnet_lite0_imagenet")
    assert path.is_file() and path.stat().st_size > 10_000_000


def test_unknown_id():
    with pytest.raises(KeyError, match="unknown weight id"):
        weights.resolve("gpt5")


def test_paper_profile_never_random(monkeypatch, tmp_path):
    p = load_profile("paper")
    with pytest.raises(ValueError, match="random weights are not allowed"):
        weights.require(p, "sam", None)
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv("SAMLLAVA_SAM_VIT_H", raising=False)
    with pytest.raises(weights.MissingWeightsError):
        weights.require(p, "sam", p.sam.weights)
    assert weights.require(load_profile("tiny"), "sam", None) is None


def test_fetch_verifies_checksum(monkeypatch, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    spec = weights.WeightSpec("t", "t.bin", "SAMLLAVA_T", url=src.as_uri(), sha256="0" * 64)
    monkeypatch.setitem(weights.REGISTRY, "t", spec)
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(weights.MissingWeightsError, match="checksum"):
        weights.fetch("t", progress=False)
    assert not (tmp_path / "cache" / "t.bin").exists()
    assert not list((tmp_path / "cache").glob("*.part"))  # nothing half-written left behind
    good = weights.WeightSpec("t", "t.bin", "SAMLLAVA_T", url=src.as_uri(), sha256=weights.sha256sum(src))
    monkeypatch.setitem(weights.REGISTRY, "t", good)
    assert weights.fetch("t", progress=False).read_bytes() == b"payload"
