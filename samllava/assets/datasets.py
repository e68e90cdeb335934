"""``samllava fetch-data``: MVTec-AD and VisA from their released archives, verified, unpacked, laid out.

:func:`fetch_data` downloads the archive (:func:`samllava.assets.download.download`: resumable, SHA-256,
atomic) into ``<out>/.downloads``, or takes one the user already has (``from_archive``), unpacks it
with tarfile's ``data`` filter (no absolute paths, no links out of the folder) and writes ``out``:

* MVTec-AD: the released layout is already the loaders' (``<category>/train/good`` ...): the
  category folders are moved into ``out``.
* VisA: the paper's protocol is the official one-class split, ``split_csv/1cls.csv``;
  :func:`write_visa_as_mvtec` writes it in the MVTec layout: ``train`` rows to ``train/good``,
  normal ``test`` rows to ``test/good``, anomalous ones to ``test/anomaly`` with their masks
  binarised (non-zero = anomaly, 0/255) as ``ground_truth/anomaly/<stem>_mask.png``.

Either way ``out`` gets a marker, ``.samllava-data.json`` (data set, layout, source, SHA-256, counts),
and is loaded once with the project's own loader before the command reports success. Then
``samllava reproduce --data-root mvtec=OUT --data-root visa=OUT2`` reads it.
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from samllava.core.paths import data_dir
from samllava.assets.download import download, ensure_free_space, free_bytes, human_bytes, partial_path, sha256sum
from samllava.data.dataset import GOOD, CategoryData
from samllava.data.images import read_array
from samllava.data.mvtec import MASK_SUFFIX, MVTEC_CATEGORIES, list_images, load_mvtec
from samllava.data.visa import ANOMALY, LAID_OUT_MARKER, SPLIT_FILE, VISA_CATEGORIES, load_visa, read_split

DOWNLOADS = ".downloads"  # archives, inside the output folder (hidden: the loaders skip it)
UNPACK = ".unpack"  # the archive's contents while they are laid out
STAGING = ".staging"  # the laid-out categories until they are all complete


class DataFetchError(RuntimeError):
    """Fetching or laying out a data set failed; the message says what to do."""


@dataclass(frozen=True)
class ArchiveSpec:
    name: str  # the command's name for it: mvtec | visa
    title: str
    filename: str  # the released archive
    url: str  # official address
    sha256: str  # published checksum of the archive
    size: int  # archive bytes, approximate (stated before downloading; the progress bar shows the exact size)
    unpacked: int  # bytes after unpacking and laying out, approximate
    categories: tuple[str, ...]
    licence: str


ARCHIVES: dict[str, ArchiveSpec] = {
    "mvtec": ArchiveSpec(
        "mvtec",
        "MVTec AD",
        "mvtec_anomaly_detection.tar.xz",
        url="https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
        "mvtec_anomaly_detection.tar.xz",
        sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        size=4_900_000_000,
        unpacked=5_100_000_000,
        categories=MVTEC_CATEGORIES,
        licence="CC BY-NC-SA 4.0",
    ),
    "visa": ArchiveSpec(
        "visa",
        "VisA",
        "VisA_20220922.tar",
        url="https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        sha256="2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
        size=1_900_000_000,
        unpacked=1_950_000_000,
        categories=VISA_CATEGORIES,
        licence="CC BY 4.0",
    ),
}


def archive_spec(name: str) -> ArchiveSpec:
    if name not in ARCHIVES:
        raise KeyError(f"unknown data set {name!r}; known: {sorted(ARCHIVES)}")
    return ARCHIVES[name]


def is_fetched(out: Path, name: str) -> bool:
    """``out`` holds a complete data set ``name`` written by :func:`fetch_data` (its marker is written last)."""
    marker = out / LAID_OUT_MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("dataset") == name


def unpack(archive: Path, into: Path, progress: bool = True) -> None:
    """Extract a tar archive (plain, .gz, .bz2 or .xz) into ``into``, refusing unsafe members."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tqdm(tar, unit=" files", desc=f"unpack {archive.name}", disable=not progress):
                tar.extract(member, into, filter="data")
    except tarfile.FilterError as err:
        raise DataFetchError(f"{archive}: unsafe member refused ({err}); this is not the released archive") from None
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, OSError) as err:
        raise DataFetchError(
            f"{archive} is damaged or not a tar archive ({type(err).__name__}: {err}); "
            "delete it and run the command again to download it afresh"
        ) from None


def find_root(folder: Path, holds: tuple[str, ...]) -> Path:
    """The folder at or below ``folder`` (through single-folder wrappers) that holds one of ``holds``."""
    current = folder
    for _ in range(4):
        if any((current / h).exists() for h in holds):
            return current
        children = [p for p in current.iterdir() if not p.name.startswith(".")]
        if len(children) != 1 or not children[0].is_dir():
            break
        current = children[0]
    raise DataFetchError(f"{folder}: none of {', '.join(holds)} found in the unpacked archive: not the released layout")


def binarise_mask(src: Path, dest: Path) -> None:
    """Write ``src`` (VisA: one id per defect) as a 0/255 PNG: any non-zero pixel is anomalous."""
    array, _ = read_array(src)
    if array.ndim == 3:
        array = array[..., : 3 if array.shape[-1] >= 3 else 1].any(axis=-1)  # alpha ignored, as load_mask does
    Image.fromarray(np.where(array != 0, 255, 0).astype(np.uint8), mode="L").save(dest)


def _target(row: dict[str, str]) -> str:
    if row["split"] == "train":
        if row["label"] != "normal":
            raise DataFetchError(f"anomalous image {row['image']} in the train split of {SPLIT_FILE}")
        return f"train/{GOOD}"
    return f"test/{GOOD}" if row["label"] == "normal" else f"test/{ANOMALY}"


def write_visa_as_mvtec(raw: Path, dest: Path, move: bool = False, progress: bool = True) -> dict[str, dict[str, int]]:
    """Lay out the VisA release at ``raw`` (with ``split_csv/1cls.csv``) in the MVTec layout under ``dest``.

    Args:
        raw: the unpacked release: ``split_csv/1cls.csv`` and ``<category>/Data/...``.
        dest: output root; ``dest/<category>/{train/good, test/good, test/anomaly, ground_truth/anomaly}``.
        move: move the images (an unpacked archive we own) rather than copy them (a user's folder).
        progress: show a progress bar.

    Returns:
        ``{category: {"train": n, "test_good": n, "test_anomaly": n}}``.
    """
    rows = read_split(raw / SPLIT_FILE)
    counts: dict[str, dict[str, int]] = {}
    total = sum(len(r) for r in rows.values())
    with tqdm(total=total, unit=" images", desc="lay out VisA", disable=not progress) as bar:
        for category, entries in sorted(rows.items()):
            count = counts.setdefault(category, {"train": 0, "test_good": 0, "test_anomaly": 0})
            for lineno, row in entries:
                src, where = raw / row["image"], f"{raw / SPLIT_FILE}:{lineno}"
                if not src.is_file():
                    raise DataFetchError(f"{where}: image {src} not found in the release")
                folder = dest / category / _target(row)
                folder.mkdir(parents=True, exist_ok=True)
                out = folder / src.name
                if out.exists():
                    raise DataFetchError(f"{where}: two rows write {out}")
                (os.replace if move else shutil.copy2)(src, out)
                count[{"train/good": "train", "test/good": "test_good"}.get(_target(row), "test_anomaly")] += 1
                if row["label"] == ANOMALY:
                    if not row["mask"] or not (raw / row["mask"]).is_file():
                        raise DataFetchError(f"{where}: mask {row['mask'] or '(none)'} of {src.name} not found")
                    masks = dest / category / "ground_truth" / ANOMALY
                    masks.mkdir(parents=True, exist_ok=True)
                    binarise_mask(raw / row["mask"], masks / f"{src.stem}{MASK_SUFFIX}.png")
                bar.update(1)
    return counts


def _move_mvtec(raw: Path, dest: Path, move: bool) -> dict[str, dict[str, int]]:
    """Move (or copy) the released MVTec folders into ``dest``; returns image counts per category."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(raw.iterdir()):
        if not entry.name.startswith("."):
            (os.replace if move else (shutil.copytree if entry.is_dir() else shutil.copy2))(entry, dest / entry.name)
    counts = {}
    for cat in sorted(p for p in dest.iterdir() if (p / "train").is_dir()):
        test = {d.name: len(list_images(d)) for d in (cat / "test").iterdir() if d.is_dir()}
        counts[cat.name] = {
            "train": len(list_images(cat / "train" / GOOD)),
            "test_good": test.get(GOOD, 0),
            "test_anomaly": sum(n for d, n in test.items() if d != GOOD),
        }
    return counts


def _write_marker_if_it_loads(name: str, out: Path, info: dict) -> dict[str, CategoryData]:
    """Write the marker, load ``out`` with the project's loader, compare with what was written.

    The marker comes first because it is what tells :func:`load_visa` that the folder is in the
    MVTec layout; it is removed again when the folder does not load.
    """
    marker = out / LAID_OUT_MARKER
    marker.write_text(json.dumps(info, indent=1) + "\n")
    try:
        data = load_mvtec(out) if name == "mvtec" else load_visa(out)
        for cat, c in info["counts"].items():
            got = {
                "train": len(data[cat].train),
                "test_good": sum(s.label == 0 for s in data[cat].test),
                "test_anomaly": sum(s.label == 1 for s in data[cat].test),
            }
            if got != c:
                raise DataFetchError(f"{out / cat}: the loader reads {got}, the layout wrote {c}")
    except BaseException:
        marker.unlink()
        raise
    return data


def _archive(spec: ArchiveSpec, out: Path, from_archive: Path | None, verify: bool, progress: bool) -> Path:
    """The verified archive: the user's file, or a (resumed) download into ``out/.downloads``."""
    if from_archive is not None:
        if not from_archive.is_file():
            raise DataFetchError(f"--from-archive {from_archive}: no such file")
        if verify and (got := sha256sum(from_archive, progress=progress)) != spec.sha256:
            raise DataFetchError(
                f"{from_archive}: SHA-256 {got} is not the published {spec.sha256} of {spec.filename}; "
                "is it the released archive? (--no-checksum uses it anyway)"
            )
        return from_archive
    dest = out / DOWNLOADS / spec.filename
    return download(
        spec.url,
        dest,
        sha256=spec.sha256 if verify else None,
        progress=progress,
        desc=spec.filename,
        manual=f"download {spec.filename} by hand and pass it with --from-archive FILE",
    )


def _prepare_out(out: Path) -> None:
    """``out`` must be new or hold only this command's work folders (from an interrupted run)."""
    out.mkdir(parents=True, exist_ok=True)
    stray = [p.name for p in out.iterdir() if p.name not in (DOWNLOADS, UNPACK, STAGING)]
    if stray:
        raise DataFetchError(f"{out} is not empty ({', '.join(sorted(stray)[:3])}...): choose a new folder for --out")
    for work in (UNPACK, STAGING):
        shutil.rmtree(out / work, ignore_errors=True)


def default_root(name: str) -> Path:
    """Where ``samllava fetch-data NAME`` lays a data set out without ``--out``: ``$SAMLLAVA_DATA_DIR/NAME``,
    else ``data/NAME`` in the repository (:func:`samllava.core.paths.data_dir`)."""
    return data_dir() / name


def fetch_data(
    name: str,
    out: str | os.PathLike | None = None,
    from_archive: str | os.PathLike | None = None,
    keep_archive: bool = False,
    verify: bool = True,
    progress: bool = True,
    log=print,
) -> Path:
    """Download (or take), check, unpack and lay out data set ``name`` (``mvtec`` | ``visa``) at ``out``
    (default :func:`default_root`).

    ``from_archive`` may also be an unpacked release folder (copied, not moved). Returns ``out``.
    Already complete (marker present): returned at once.

    Raises:
        DataFetchError, DownloadError: one line saying what went wrong and what to do.
    """
    spec, out = archive_spec(name), Path(out if out is not None else default_root(name)).expanduser()
    if is_fetched(out, name):
        log(f"{spec.title} is already laid out in {out}")
        return out
    _prepare_out(out)
    source = Path(from_archive).expanduser() if from_archive else None
    pending = 0 if source else max(0, spec.size - _partial_size(out / DOWNLOADS / spec.filename))
    need = pending + spec.unpacked
    free = human_bytes(free_bytes(out))
    log(f"{spec.title} ({spec.licence}): about {human_bytes(need)} needed in {out} ({free} free)")
    ensure_free_space(out, need, spec.title)
    holds = (SPLIT_FILE.as_posix(),) if name == "visa" else spec.categories
    if source is not None and source.is_dir():
        raw, owned = find_root(source, holds), False
    else:
        archive = _archive(spec, out, source, verify, progress)
        unpack(archive, out / UNPACK, progress)
        raw, owned = find_root(out / UNPACK, holds), True
    staging = out / STAGING
    if name == "visa":
        counts = write_visa_as_mvtec(raw, staging, move=owned, progress=progress)
    else:
        counts = _move_mvtec(raw, staging, move=owned)
    for entry in sorted(staging.iterdir()):
        os.replace(entry, out / entry.name)
    staging.rmdir()
    shutil.rmtree(out / UNPACK, ignore_errors=True)
    info = {
        "dataset": name,
        "layout": "mvtec",
        "source": spec.url if source is None else str(source.resolve()),
        "archive": spec.filename,
        "sha256": spec.sha256 if verify else None,
        "split": SPLIT_FILE.as_posix() if name == "visa" else "released",
        "counts": counts,
    }
    _write_marker_if_it_loads(name, out, info)
    if source is None and not keep_archive:
        shutil.rmtree(out / DOWNLOADS, ignore_errors=True)
    return out


def _partial_size(dest: Path) -> int:
    for p in (dest, partial_path(dest)):
        if p.is_file():
            return p.stat().st_size
    return 0
