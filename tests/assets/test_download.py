"""samllava.assets.download against a server on 127.0.0.1: resume, checksum, atomic rename, one-line errors."""

import hashlib
import socket

import pytest

from samllava.assets.download import DownloadError, download, ensure_free_space, human_bytes, partial_path, sha256sum

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_and_renames(fileserver, tmp_path):
    fileserver.files["/w.bin"] = PAYLOAD
    dest = tmp_path / "cache" / "w.bin"
    assert download(f"{fileserver.url}/w.bin", dest, sha256=SHA, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and not partial_path(dest).exists()
    n = len(fileserver.requests)
    assert download(f"{fileserver.url}/w.bin", dest, sha256=SHA, progress=False) == dest  # present: no request
    assert len(fileserver.requests) == n


def test_cut_connection_keeps_partial_and_resumes_with_range(fileserver, tmp_path):
    fileserver.files["/w.bin"] = PAYLOAD
    fileserver.cut["/w.bin"] = 3000
    dest = tmp_path / "w.bin"
    with pytest.raises(
        DownloadError, match=r"cut.*partial download \(3.0 kB\) is kept: run the command again to resume"
    ):
        download(f"{fileserver.url}/w.bin", dest, sha256=SHA, progress=False)
    assert partial_path(dest).stat().st_size == 3000 and not dest.exists()
    download(f"{fileserver.url}/w.bin", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert fileserver.requests[-1].headers["range"] == "bytes=3000-"


def test_server_ignoring_range_restarts(fileserver, tmp_path):
    fileserver.files["/w.bin"] = PAYLOAD
    fileserver.ignore_range = True
    dest = tmp_path / "w.bin"
    partial_path(dest).write_bytes(b"garbage!")  # not a prefix of the file: must be discarded
    download(f"{fileserver.url}/w.bin", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_complete_partial_file_is_verified_not_refetched(fileserver, tmp_path):
    fileserver.files["/w.bin"] = PAYLOAD
    dest = tmp_path / "w.bin"
    partial_path(dest).write_bytes(PAYLOAD)  # interrupted between the last byte and the rename
    download(f"{fileserver.url}/w.bin", dest, sha256=SHA, progress=False)  # the server answers 416
    assert dest.read_bytes() == PAYLOAD


def test_wrong_checksum_deletes_the_download(fileserver, tmp_path):
    fileserver.files["/w.bin"] = PAYLOAD
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError) as err:
        download(f"{fileserver.url}/w.bin", dest, sha256="0" * 64, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "checksum mismatch" in msg and SHA in msg and "was deleted" in msg
    assert not dest.exists() and not partial_path(dest).exists()


def test_local_file_address(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = download(src.as_uri(), tmp_path / "out" / "w.bin", sha256=SHA, progress=False)
    assert sha256sum(dest) == SHA


def test_http_error_names_status_and_alternative(fileserver, tmp_path):
    with pytest.raises(DownloadError, match=r"HTTP 404 .*/missing.bin.*put it at X"):
        download(f"{fileserver.url}/missing.bin", tmp_path / "m.bin", progress=False, manual="put it at X")


def test_offline_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as err:
        download(f"http://127.0.0.1:{port}/w.bin", tmp_path / "w.bin", progress=False, manual="copy it by hand")
    msg = str(err.value)
    assert "\n" not in msg and "refused the connection" in msg and "copy it by hand" in msg


def test_proxy_asking_for_login(fileserver, monkeypatch, tmp_path):
    fileserver.proxy_auth = True
    monkeypatch.setenv("http_proxy", fileserver.url)  # every http:// request goes to the proxy
    with pytest.raises(DownloadError, match=r"proxy asks for a login \(HTTP 407\).*user:password@host:port"):
        download("http://weights.example/w.bin", tmp_path / "w.bin", progress=False)
    assert fileserver.requests[0].path == "http://weights.example/w.bin"  # it was the proxy that answered


def test_unreachable_proxy(fileserver, monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError, match=r"the proxy http://127.0.0.1:\d+ failed to reach weights.example"):
        download("http://weights.example/w.bin", tmp_path / "w.bin", progress=False)


def test_free_space_check(tmp_path):
    with pytest.raises(DownloadError, match=r"needs 1000000.0 GB free in .*, which has"):
        ensure_free_space(tmp_path / "not" / "yet", 10**15, "the download")
    assert human_bytes(1536) == "1.5 kB" and human_bytes(14_140_000_000) == "14.1 GB" and human_bytes(12) == "12 B"
