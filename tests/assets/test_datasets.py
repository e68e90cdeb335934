"""samllava fetch-data, offline: fake archives in the real released layouts, served from 127.0.0.1 or a
local file, checked, unpacked, laid out, and read back with the project's loaders."""

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samllava.cli import main
from samllava.data import load_dataset, load_mask, load_mvtec, load_visa
from samllava.assets import datasets as fd
from samllava.data.visa import LAID_OUT_MARKER, read_split
from samllava.assets.download import DownloadError, partial_path

ROOT = Path(__file__).resolve().parents[2]


def _tar(src: Path, dest: Path, mode: str, extra: dict[str, bytes]) -> Path:
    """Pack ``src``'s contents at the archive's top level, as the releases do (no generator.json)."""
    with tarfile.open(dest, mode) as tar:
        for path in sorted(src.rglob("*")):
            if path.is_file() and path.name != "generator.json":
                tar.add(path, arcname=path.relative_to(src).as_posix())
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


@pytest.fixture(scope="module")
def mvtec_archive(mvtec_root, tmp_path_factory) -> Path:
    return _tar(
        mvtec_root,
        tmp_path_factory.mktemp("arch") / "mvtec_anomaly_detection.tar.xz",
        "w:xz",
        {"license.txt": b"CC BY-NC-SA 4.0\n", "readme.txt": b"MVTec AD\n"},
    )


@pytest.fixture(scope="module")
def visa_archive(visa_root, tmp_path_factory) -> Path:
    return _tar(
        visa_root, tmp_path_factory.mktemp("arch") / "VisA_20220922.tar", "w", {"LICENSE-DATASET": b"CC BY 4.0\n"}
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _use(monkeypatch, name: str, archive: Path, url: str | None = None, sha256: str | None = None):
    spec = fd.ARCHIVES[name]
    fake = fd.ArchiveSpec(
        name,
        spec.title,
        spec.filename,
        url or archive.as_uri(),
        sha256 or _sha(archive),
        size=archive.stat().st_size,
        unpacked=3 * archive.stat().st_size,
        categories=spec.categories,
        licence=spec.licence,
    )
    monkeypatch.setitem(fd.ARCHIVES, name, fake)


def _counts(data) -> dict:
    return {
        c: (len(d.train), sum(s.label == 0 for s in d.test), sum(s.label == 1 for s in d.test)) for c, d in data.items()
    }


def test_official_addresses_and_checksums():
    assert set(fd.ARCHIVES) == {"mvtec", "visa"}
    for spec in fd.ARCHIVES.values():
        assert spec.url.startswith("https://") and spec.url.endswith(spec.filename)
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0 and spec.size > 10**9


def test_mvtec_download_over_http(fileserver, monkeypatch, mvtec_root, mvtec_archive, tmp_path, capsys):
    fileserver.files["/mvtec.tar.xz"] = mvtec_archive.read_bytes()
    _use(monkeypatch, "mvtec", mvtec_archive, url=f"{fileserver.url}/mvtec.tar.xz")
    out = tmp_path / "mvtec"
    assert main(["fetch-data", "mvtec", "--out", str(out), "--quiet"]) == 0
    stdout, stderr = capsys.readouterr()
    assert f"--data-root mvtec={out}" in stdout and "needed in" in stderr
    assert _counts(load_mvtec(out)) == _counts(load_mvtec(mvtec_root))
    assert sorted(p.name for p in out.iterdir()) == [LAID_OUT_MARKER, "bottle", "grid", "license.txt", "readme.txt"]
    marker = json.loads((out / LAID_OUT_MARKER).read_text())
    assert marker["dataset"] == "mvtec" and marker["sha256"] == _sha(mvtec_archive)
    n = len(fileserver.requests)
    assert main(["fetch-data", "mvtec", "--out", str(out), "--quiet"]) == 0  # already there: nothing fetched
    assert len(fileserver.requests) == n


def test_mvtec_resumes_a_cut_download_and_keeps_the_archive(fileserver, monkeypatch, mvtec_archive, tmp_path):
    data = mvtec_archive.read_bytes()
    fileserver.files["/mvtec.tar.xz"] = data
    fileserver.cut["/mvtec.tar.xz"] = len(data) // 2
    _use(monkeypatch, "mvtec", mvtec_archive, url=f"{fileserver.url}/mvtec.tar.xz")
    out = tmp_path / "m"
    with pytest.raises(DownloadError, match="run the command again to resume"):
        fd.fetch_data("mvtec", out, progress=False, log=lambda m: None)
    assert partial_path(out / fd.DOWNLOADS / "mvtec_anomaly_detection.tar.xz").stat().st_size == len(data) // 2
    fd.fetch_data("mvtec", out, keep_archive=True, progress=False, log=lambda m: None)
    assert fileserver.requests[-1].headers["range"] == f"bytes={len(data) // 2}-"
    assert (out / fd.DOWNLOADS / "mvtec_anomaly_detection.tar.xz").read_bytes() == data
    assert sorted(load_mvtec(out)) == ["bottle", "grid"]


def test_wrong_checksum_leaves_nothing(fileserver, monkeypatch, mvtec_archive, tmp_path, capsys):
    fileserver.files["/mvtec.tar.xz"] = mvtec_archive.read_bytes()
    _use(monkeypatch, "mvtec", mvtec_archive, url=f"{fileserver.url}/mvtec.tar.xz", sha256="f" * 64)
    out = tmp_path / "m"
    assert main(["fetch-data", "mvtec", "--out", str(out), "--quiet"]) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("samllava fetch-data: mvtec:")]
    assert "checksum mismatch" in line and "was deleted" in line
    assert [p.name for p in out.iterdir()] == [fd.DOWNLOADS] and not list((out / fd.DOWNLOADS).iterdir())


def test_offline_says_what_to_do(monkeypatch, mvtec_archive, tmp_path, capsys):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _use(monkeypatch, "mvtec", mvtec_archive, url=f"http://127.0.0.1:{port}/mvtec.tar.xz")
    assert main(["fetch-data", "mvtec", "--out", str(tmp_path / "m"), "--quiet"]) == 2
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("samllava fetch-data: mvtec:")]
    assert "refused the connection" in line and "pass it with --from-archive FILE" in line and "Traceback" not in err


def test_visa_from_archive_written_in_the_mvtec_layout(monkeypatch, visa_root, visa_archive, tmp_path, capsys):
    _use(monkeypatch, "visa", visa_archive)
    out = tmp_path / "visa"
    assert main(["fetch-data", "visa", "--out", str(out), "--from-archive", str(visa_archive), "--quiet"]) == 0
    assert visa_archive.is_file()  # the user's file is never deleted
    rows = read_split(visa_root / "split_csv" / "1cls.csv")
    for category, entries in rows.items():
        for _, row in entries:
            name = Path(row["image"]).name
            folder = {"train": "train/good"}.get(
                row["split"], "test/good" if row["label"] == "normal" else "test/anomaly"
            )
            assert (out / category / folder / name).is_file()
            if row["mask"]:
                mask = out / category / "ground_truth" / "anomaly" / f"{Path(name).stem}_mask.png"
                values = set(np.unique(np.asarray(Image.open(mask))).tolist())
                assert values <= {0, 255} and 255 in values  # binarised: VisA's ids 1 and 2 become 255
                assert load_mask(mask, 32).equal(load_mask(visa_root / row["mask"], 32))
    assert not (out / "split_csv").exists() and not (out / fd.UNPACK).exists()
    laid_out, raw = load_visa(out), load_visa(visa_root)
    assert _counts(laid_out) == _counts(raw)
    assert {s.defect_type for d in laid_out.values() for s in d.test} == {"good", "anomaly"}
    assert _counts(load_dataset(out)) == _counts(raw)  # the generic loader reads it as an MVTec-layout folder too


def test_visa_from_an_unpacked_folder_copies(monkeypatch, visa_root, tmp_path):
    before = sorted(p.relative_to(visa_root) for p in visa_root.rglob("*"))
    fd.fetch_data("visa", tmp_path / "v", from_archive=visa_root, progress=False, log=lambda m: None)
    assert sorted(p.relative_to(visa_root) for p in visa_root.rglob("*")) == before  # source untouched
    assert sorted(load_visa(tmp_path / "v")) == ["candle", "pcb1"]


def test_user_archive_checksum(monkeypatch, visa_archive, tmp_path):
    _use(monkeypatch, "visa", visa_archive, sha256="e" * 64)
    with pytest.raises(fd.DataFetchError, match=r"is not the published e{64} of VisA_20220922.tar.*--no-checksum"):
        fd.fetch_data("visa", tmp_path / "v", from_archive=visa_archive, progress=False, log=lambda m: None)
    fd.fetch_data("visa", tmp_path / "v", from_archive=visa_archive, verify=False, progress=False, log=lambda m: None)
    assert json.loads((tmp_path / "v" / LAID_OUT_MARKER).read_text())["sha256"] is None


def test_unsafe_damaged_and_wrong_archives(monkeypatch, visa_archive, mvtec_archive, tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    _use(monkeypatch, "visa", evil)
    with pytest.raises(fd.DataFetchError, match="unsafe member refused"):
        fd.fetch_data("visa", tmp_path / "a", from_archive=evil, progress=False, log=lambda m: None)
    assert not (tmp_path / "escaped.txt").exists()
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(visa_archive.read_bytes()[:5000])
    _use(monkeypatch, "visa", damaged)
    with pytest.raises(fd.DataFetchError, match="damaged or not a tar archive"):
        fd.fetch_data("visa", tmp_path / "b", from_archive=damaged, progress=False, log=lambda m: None)
    _use(monkeypatch, "visa", mvtec_archive)  # the other data set's archive
    with pytest.raises(fd.DataFetchError, match="split_csv/1cls.csv found in the unpacked archive"):
        fd.fetch_data("visa", tmp_path / "c", from_archive=mvtec_archive, progress=False, log=lambda m: None)


def test_out_must_be_new(monkeypatch, visa_archive, tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "mine.txt").write_text("keep me")
    _use(monkeypatch, "visa", visa_archive)
    with pytest.raises(fd.DataFetchError, match="is not empty .*choose a new folder"):
        fd.fetch_data("visa", tmp_path / "v", from_archive=visa_archive, progress=False, log=lambda m: None)


def test_disk_space_is_checked_first(monkeypatch, visa_archive, tmp_path):
    spec = fd.ARCHIVES["visa"]
    monkeypatch.setitem(
        fd.ARCHIVES,
        "visa",
        fd.ArchiveSpec(
            "visa",
            spec.title,
            spec.filename,
            visa_archive.as_uri(),
            _sha(visa_archive),
            size=1,
            unpacked=10**15,
            categories=spec.categories,
            licence=spec.licence,
        ),
    )
    with pytest.raises(DownloadError, match="VisA needs 1000000.0 GB free"):
        fd.fetch_data("visa", tmp_path / "v", progress=False, log=lambda m: None)


def test_laid_out_visa_needs_its_marker(monkeypatch, visa_archive, tmp_path):
    _use(monkeypatch, "visa", visa_archive)
    out = fd.fetch_data("visa", tmp_path / "v", from_archive=visa_archive, progress=False, log=lambda m: None)
    (out / LAID_OUT_MARKER).unlink()
    with pytest.raises(FileNotFoundError, match="or a folder written by `samllava fetch-data visa`"):
        load_visa(out)


def test_reproduce_reads_the_fetched_folders(monkeypatch, mvtec_archive, visa_archive, tmp_path):
    from samllava.core.config import load_profile
    from samllava.notebook.tables.data import cross_domain_sets

    _use(monkeypatch, "mvtec", mvtec_archive)
    _use(monkeypatch, "visa", visa_archive)
    m = fd.fetch_data("mvtec", tmp_path / "m", progress=False, log=lambda x: None)
    v = fd.fetch_data("visa", tmp_path / "v", from_archive=visa_archive, progress=False, log=lambda x: None)
    sets = cross_domain_sets(load_profile("tiny"), {"mvtec": str(m), "visa": str(v)})  # notebook 06's data
    assert sorted(sets) == ["MVTec-AD", "VisA"] and sorted(sets["VisA"][1]) == ["candle", "pcb1"]


@pytest.mark.notebooks
@pytest.mark.slow
def test_notebook_01_on_fetched_data(monkeypatch, mvtec_archive, visa_archive, tmp_path):
    _use(monkeypatch, "mvtec", mvtec_archive)
    _use(monkeypatch, "visa", visa_archive)
    m = fd.fetch_data("mvtec", tmp_path / "m", progress=False, log=lambda x: None)
    v = fd.fetch_data("visa", tmp_path / "v", from_archive=visa_archive, progress=False, log=lambda x: None)
    env = {
        **os.environ,
        "SAMLLAVA_RESULTS_DIR": str(tmp_path / "results"),
        "SAMLLAVA_FIGURES_DIR": str(tmp_path / "figures"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-c",
        "from samllava.cli import main; import sys; sys.exit(main(sys.argv[1:]))",
        "reproduce",
        "--profile",
        "tiny",
        "--smoke",
        "--only",
        "01",
        "--data-root",
        f"mvtec={m}",
        "--data-root",
        f"visa={v}",
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = (tmp_path / "results" / "data_summary.md").read_text()
    assert "VisA" in summary and "miniature (generated)" not in summary  # the fetched folders, not the miniatures


def test_fetch_data_without_out_uses_the_data_folder(monkeypatch, visa_archive, tmp_path, capsys):
    """`samllava fetch-data visa` as the README writes it: laid out in $SAMLLAVA_DATA_DIR/visa."""
    _use(monkeypatch, "visa", visa_archive)
    monkeypatch.setenv("SAMLLAVA_DATA_DIR", str(tmp_path / "data"))
    assert main(["fetch-data", "visa", "--from-archive", str(visa_archive), "--quiet"]) == 0
    assert f"--data-root visa={tmp_path / 'data' / 'visa'}" in capsys.readouterr().out
    assert (tmp_path / "data" / "visa" / LAID_OUT_MARKER).is_file()
