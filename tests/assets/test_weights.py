import hashlib
import json
import re
import socket

import pytest

from samllava.assets import weights
from samllava.cli import main
from samllava.core.config import load_profile
from samllava.assets.download import DownloadError


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
    with pytest.raises(DownloadError, match="checksum mismatch"):
        weights.fetch("t", progress=False)
    assert not (tmp_path / "cache" / "t.bin").exists()
    assert not list((tmp_path / "cache").glob("*.part"))  # nothing half-written left behind
    good = weights.WeightSpec("t", "t.bin", "SAMLLAVA_T", url=src.as_uri(), sha256=weights.sha256sum(src))
    monkeypatch.setitem(weights.REGISTRY, "t", good)
    assert weights.fetch("t", progress=False).read_bytes() == b"payload"
    assert weights.fetch("t", tmp_path / "elsewhere", progress=False) == tmp_path / "elsewhere" / "t.bin"  # --dir


def test_paper_profile_files_have_addresses_checksums_and_sizes():
    ids = weights.profile_weight_ids(load_profile("paper"))
    assert set(ids) == {"clip_vit_b16_laion400m", "sam_vit_h", "llava_1_5_7b"}
    for wid in ids:
        s = weights.spec(wid)
        assert s.size and (s.url or s.hf_repo)
        if s.url:
            assert s.url.startswith("https://") and re.fullmatch(r"[0-9a-f]{64}", s.sha256)
    clip = weights.spec("clip_vit_b16_laion400m")
    # open_clip's own check: the file name carries the first 8 hex digits of the SHA-256
    assert clip.sha256.startswith(re.search(r"-([0-9a-f]{8})\.pt$", clip.url).group(1))
    llava = weights.spec("llava_1_5_7b")
    assert llava.hf_repo == "llava-hf/llava-1.5-7b-hf" and re.fullmatch(r"[0-9a-f]{40}", llava.hf_revision)
    assert "*.safetensors" in llava.hf_allow and not any(p.endswith(".bin") for p in llava.hf_allow)


# --- samllava fetch-weights, offline: a server on 127.0.0.1 --------------------------------------


def _served_spec(server, wid, data, sha=None, size=None):
    server.files[f"/{wid}.pt"] = data
    return weights.WeightSpec(
        wid,
        f"{wid}.pt",
        f"SAMLLAVA_TEST_{wid.upper()}",
        url=f"{server.url}/{wid}.pt",
        sha256=sha or hashlib.sha256(data).hexdigest(),
        size=size or len(data),
    )


def test_cli_fetches_every_file_and_reports_each_failure_on_one_line(fileserver, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(weights.REGISTRY, "good", _served_spec(fileserver, "good", b"g" * 5000))
    monkeypatch.setitem(weights.REGISTRY, "bad", _served_spec(fileserver, "bad", b"b" * 5000, sha="1" * 64))
    gone = weights.WeightSpec(
        "gone", "gone.pt", "SAMLLAVA_TEST_GONE", url=f"{fileserver.url}/gone.pt", sha256="2" * 64, size=10
    )
    monkeypatch.setitem(weights.REGISTRY, "gone", gone)
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    assert main(["fetch-weights", "good", "bad", "gone", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"good: {tmp_path / 'cache' / 'good.pt'}"]
    lines = err.splitlines()
    assert lines[0].startswith("samllava fetch-weights: about 10.0 kB to download into")  # disk first
    assert [ln.split(": ")[1] for ln in lines[1:]] == ["bad", "gone"]  # one line per failed file, nothing else
    assert "checksum mismatch" in lines[1] and "was deleted" in lines[1] and "HTTP 404" in lines[2]
    assert "Traceback" not in err
    assert (tmp_path / "cache" / "good.pt").read_bytes() == b"g" * 5000
    assert not list((tmp_path / "cache").glob("bad*"))


def test_cli_dir_and_disk_check(fileserver, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(weights.REGISTRY, "good", _served_spec(fileserver, "good", b"g" * 100))
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    assert main(["fetch-weights", "good", "--dir", str(tmp_path / "w"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert (
        out.strip() == f"good: {tmp_path / 'w' / 'good.pt'}" and f"export SAMLLAVA_WEIGHTS_DIR={tmp_path / 'w'}" in err
    )
    huge = _served_spec(fileserver, "huge", b"h", size=10**15)
    monkeypatch.setitem(weights.REGISTRY, "huge", huge)
    assert main(["fetch-weights", "huge", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "samllava fetch-weights: disk: the download needs 1000000.0 GB free" in err
    assert not any(r.path == "/huge.pt" for r in fileserver.requests)  # refused before downloading anything


def test_cli_offline_says_what_to_do(monkeypatch, tmp_path, capsys):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = weights.WeightSpec(
        "off", "off.pt", "SAMLLAVA_TEST_OFF", url=f"http://127.0.0.1:{port}/off.pt", sha256="3" * 64, size=10
    )
    monkeypatch.setitem(weights.REGISTRY, "off", spec)
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    assert main(["fetch-weights", "off", "--quiet"]) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("samllava fetch-weights: off:")]
    assert "refused the connection" in line and f"download it by hand to {tmp_path / 'off.pt'}" in line
    assert "SAMLLAVA_TEST_OFF" in line


def test_cli_reports_packaged_weights_and_unknown_ids(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    assert main(["fetch-weights", "tiny_tokenizer", "--quiet"]) == 0
    assert "tiny_tokenizer:" in capsys.readouterr().out
    # a packaged file with --dir: nothing downloaded there, so no advice to point the profiles at it
    assert main(["fetch-weights", "tiny_tokenizer", "--dir", str(tmp_path / "w"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "shipped with an installed package: nothing to download" in out and "export" not in err
    assert main(["fetch-weights", "gpt5"]) == 2
    assert "unknown weight id 'gpt5'" in capsys.readouterr().err


# --- the LLaVA checkpoint through huggingface_hub, against a fake Hub on 127.0.0.1 ---------------

REVISION = "a272c74b2481d8aff3aa6fc2c4bf891fe57334fb"
REPO = "llava-hf/llava-1.5-7b-hf"


def _fake_hub(server, files: dict[str, bytes], lfs: set[str], bad_sha: set[str] = frozenset(),
              bad_blob: set[str] = frozenset()):
    """Serve ``files`` as the Hub does: a tree listing (with LFS SHA-256) and /resolve/ addresses."""
    entries = []
    for path, data in files.items():
        # the Hub lists git's blob id of each file (of the pointer file for an LFS file)
        entry = {"type": "file", "path": path, "size": len(data),
                 "oid": hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()}
        if path in bad_blob:
            entry["oid"] = "0" * 40
        if path in lfs:
            sha = "0" * 64 if path in bad_sha else hashlib.sha256(data).hexdigest()
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
        entries.append(entry)
        server.files[f"/{REPO}/resolve/{REVISION}/{path}"] = data
    server.routes[f"/api/models/{REPO}/tree/{REVISION}"] = lambda req: (
        200,
        {"Content-Type": "application/json"},
        json.dumps(entries).encode(),
    )
    server.extra_headers = lambda path: {
        "X-Repo-Commit": REVISION,
        "ETag": f'"{hashlib.sha1(server.files[path]).hexdigest()}"',
    }


def _checkpoint_files() -> dict[str, bytes]:
    index = {
        "metadata": {"total_size": 16},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    return {
        "config.json": b'{"model_type": "llava"}',
        "model.safetensors.index.json": json.dumps(index).encode(),
        "model-00001-of-00002.safetensors": b"shard-one" * 100,
        "model-00002-of-00002.safetensors": b"shard-two" * 100,
        "tokenizer.model": b"sentencepiece",
        "tokenizer_config.json": b"{}",
        "README.md": b"# card",
        "pytorch_model.bin": b"not wanted",
        "subdir/notes.txt": b"not wanted",
    }


def test_llava_snapshot_pinned_revision_only_needed_files(fileserver, monkeypatch, tmp_path):
    files = _checkpoint_files()
    _fake_hub(
        fileserver,
        files,
        lfs={
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "tokenizer.model",
            "pytorch_model.bin",
        },
    )
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("SAMLLAVA_LLAVA_7B", raising=False)
    with pytest.raises(weights.MissingWeightsError, match="samllava fetch-weights llava_1_5_7b"):
        weights.resolve("llava_1_5_7b")
    folder = weights.fetch("llava_1_5_7b", progress=False, endpoint=fileserver.url)
    assert folder == tmp_path / "cache" / "llava-1.5-7b-hf"
    got = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}
    assert got == {
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "tokenizer.model",
        "tokenizer_config.json",
    }
    assert (folder / "model-00002-of-00002.safetensors").read_bytes() == files["model-00002-of-00002.safetensors"]
    assert all(f"/resolve/{REVISION}/" in r.path for r in fileserver.requests if "/resolve/" in r.path)
    assert weights.resolve("llava_1_5_7b") == folder
    n = len(fileserver.requests)
    assert weights.fetch("llava_1_5_7b", progress=False, endpoint=fileserver.url) == folder  # complete: no request
    assert len(fileserver.requests) == n


def test_llava_incomplete_folder_is_not_resolved(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv("SAMLLAVA_LLAVA_7B", raising=False)
    folder = tmp_path / "llava-1.5-7b-hf"
    folder.mkdir()
    for name, data in _checkpoint_files().items():
        if name != "model-00002-of-00002.safetensors" and "/" not in name:
            (folder / name).write_bytes(data)
    with pytest.raises(weights.MissingWeightsError, match=r"incomplete, missing model-00002-of-00002\.safetensors;"):
        weights.resolve("llava_1_5_7b")  # a shard named by the index is missing


def test_llava_empty_or_partial_folder_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("SAMLLAVA_LLAVA_7B", raising=False)
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    folder = tmp_path / "llava-1.5-7b-hf"
    folder.mkdir()
    assert weights.hf_folder_missing(folder) == [
        "config.json", "tokenizer_config.json", "tokenizer.model or tokenizer.json",
        "model.safetensors.index.json or *.safetensors (the weights)"]
    with pytest.raises(weights.MissingWeightsError, match="samllava fetch-weights llava_1_5_7b"):
        weights.resolve("llava_1_5_7b")  # empty: not started, say how to fetch it
    (folder / "config.json").write_text("{}")
    with pytest.raises(weights.MissingWeightsError, match="incomplete, missing tokenizer_config.json, tokenizer"):
        weights.resolve("llava_1_5_7b")
    # a folder given by its variable is checked too, before transformers fails somewhere inside
    monkeypatch.setenv("SAMLLAVA_LLAVA_7B", str(folder))
    with pytest.raises(weights.MissingWeightsError, match="SAMLLAVA_LLAVA_7B"):
        weights.resolve("llava_1_5_7b")
    files = _checkpoint_files()
    for name in ("tokenizer_config.json", "tokenizer.model", "model.safetensors.index.json",
                 "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        (folder / name).write_bytes(files[name])
    assert weights.resolve("llava_1_5_7b") == folder


def test_llava_non_lfs_file_checked_against_its_git_blob_id(fileserver, monkeypatch, tmp_path):
    _fake_hub(fileserver, _checkpoint_files(), lfs={"model-00001-of-00002.safetensors"}, bad_blob={"config.json"})
    with pytest.raises(DownloadError, match=rf"checksum mismatch for {REPO}/config.json@a272c74"):
        weights.fetch("llava_1_5_7b", tmp_path, progress=False, endpoint=fileserver.url)
    assert not (tmp_path / "llava-1.5-7b-hf" / "config.json").exists()


def test_every_downloadable_file_has_a_checksum():
    for s in weights.REGISTRY.values():
        if s.url:
            assert s.sha256 and len(s.sha256) == 64, s.id  # the CLIP file included
        if s.hf_repo:
            assert s.hf_revision and len(s.hf_revision) == 40, s.id  # LFS SHA-256 and git blob ids at that commit


def test_llava_wrong_sha256_deletes_the_file(fileserver, monkeypatch, tmp_path):
    shard = "model-00001-of-00002.safetensors"
    _fake_hub(fileserver, _checkpoint_files(), lfs={shard}, bad_sha={shard})
    with pytest.raises(DownloadError, match=rf"checksum mismatch for {REPO}/{shard}@a272c74"):
        weights.fetch("llava_1_5_7b", tmp_path, progress=False, endpoint=fileserver.url)
    assert not (tmp_path / "llava-1.5-7b-hf" / shard).exists()


def test_llava_hub_unreachable_is_one_line(monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(
        "huggingface_hub.utils._http.time.sleep", lambda seconds: None
    )  # its retries, without the waits
    with pytest.raises(DownloadError) as err:
        weights.fetch("llava_1_5_7b", tmp_path, progress=False, endpoint=f"http://127.0.0.1:{port}")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cannot reach the Hugging Face Hub")
    assert f"hf download {REPO} --revision {REVISION} --local-dir {tmp_path / 'llava-1.5-7b-hf'}" in msg


def test_llava_proxy_asking_for_login(fileserver, monkeypatch, tmp_path):
    fileserver.proxy_auth = True
    monkeypatch.setenv("HTTP_PROXY", fileserver.url)
    monkeypatch.setenv("http_proxy", fileserver.url)
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)
    with pytest.raises(DownloadError, match=r"^the proxy asks for a login \(HTTP 407\)"):
        weights.fetch("llava_1_5_7b", tmp_path, progress=False, endpoint="http://hub.example")
    assert fileserver.requests and fileserver.requests[0].path.startswith("http://hub.example/api/models/")


def test_docs_name_the_addresses_checksums_and_revision():
    from pathlib import Path

    from samllava.assets.datasets import ARCHIVES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "weights-and-data.md").read_text()
    for wid in weights.profile_weight_ids(load_profile("paper")):
        s = weights.spec(wid)
        assert f"`{wid}`" in doc and (s.sha256 is None or s.sha256[:12] in doc)
    assert weights.spec("llava_1_5_7b").hf_revision in doc
    for a in ARCHIVES.values():
        assert a.filename in a.url and a.filename in doc and a.sha256[:12] in doc
