"""Resumable, verified downloads: one file from an address to a path, or a clear one-line error.

:func:`download` writes to ``<dest>.part``, asks the server for the rest of a partial file with an
HTTP ``Range`` request (a server that ignores it sends the whole file again), shows a progress bar,
checks the SHA-256 and only then renames the file into place, so ``dest`` is either absent or
complete and verified. Every failure is a :class:`DownloadError` whose message is one line: what
went wrong (offline, a proxy, an HTTP status, a checksum) and what to do about it. ``file://``
addresses work too (tests and mirrors).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 1 << 20  # bytes per read and per hashing step
TIMEOUT = 60.0  # seconds without data before a connection counts as lost


class DownloadError(RuntimeError):
    """A download failed; ``str(error)`` is one line saying what is wrong and what to do."""


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 kB'`` (powers of 1000, as disks are sold)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # unreachable; keeps type checkers quiet


def partial_path(dest: Path) -> Path:
    """Where the bytes of ``dest`` accumulate until they are verified."""
    return dest.with_name(dest.name + ".part")


def sha256sum(path: str | os.PathLike, progress: bool = False, desc: str | None = None) -> str:
    """Hex SHA-256 of a file, read in :data:`CHUNK` blocks (a progress bar for large files)."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with (
        open(path, "rb") as f,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"sha256 {desc or Path(path).name}",
            disable=not progress or size < 100 * CHUNK,
        ) as bar,
    ):
        while block := f.read(CHUNK):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def free_bytes(directory: str | os.PathLike) -> int:
    """Free space of the file system that holds ``directory`` (or its nearest existing parent)."""
    path = Path(directory).expanduser().absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def ensure_free_space(directory: str | os.PathLike, need: int, what: str) -> None:
    """Raise :class:`DownloadError` when ``directory`` has less than ``need`` bytes free."""
    free = free_bytes(directory)
    if free < need:
        raise DownloadError(
            f"{what} needs {human_bytes(need)} free in {directory}, which has {human_bytes(free)}: "
            "free some space or choose another folder"
        )


def verify(path: Path, sha256: str | None, source: str, progress: bool = False) -> None:
    """Check ``path`` against ``sha256``; on a mismatch delete it and raise :class:`DownloadError`."""
    if not sha256:
        return
    got = sha256sum(path, progress=progress)
    if got != sha256.lower():
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {source}: SHA-256 {got} is not the published {sha256}; "
            f"the file was deleted ({path}); run the command again, and if it repeats the "
            "file at that address has changed or is corrupted on the way (a proxy?)"
        )


def _proxy_for(url: str) -> str | None:
    scheme = urllib.parse.urlsplit(url).scheme
    host = urllib.parse.urlsplit(url).hostname or ""
    if scheme == "file" or urllib.request.proxy_bypass_environment(host):
        return None
    return urllib.request.getproxies().get(scheme)


def _network_message(err: BaseException, url: str, part: Path, manual: str) -> str:
    """One line for a failure to reach ``url`` (offline, DNS, refused, proxy, timeout, cut)."""
    host = urllib.parse.urlsplit(url).hostname or url
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    kept = ""
    if part.exists() and part.stat().st_size:
        kept = f"; the partial download ({human_bytes(part.stat().st_size)}) is kept: run the command again to resume"
    proxy = _proxy_for(url)
    if "Tunnel connection failed" in str(reason) or (proxy and isinstance(reason, (ConnectionError, socket.gaierror))):
        return (
            f"the proxy {proxy or '(from HTTPS_PROXY)'} failed to reach {host} ({reason}): check HTTPS_PROXY / "
            f"HTTP_PROXY (user:password@host:port if it asks for a login) or unset them{kept}"
        )
    if isinstance(reason, socket.gaierror):
        what = f"cannot resolve {host} ({reason.strerror or reason}): this machine looks offline"
    elif isinstance(reason, (TimeoutError, socket.timeout)):
        what = f"no data from {host} for {TIMEOUT:.0f} s (timed out)"
    elif isinstance(reason, ConnectionRefusedError):
        what = f"{host} refused the connection"
    elif isinstance(err, http.client.HTTPException) or isinstance(reason, ConnectionError):
        what = f"the connection to {host} was cut ({type(reason).__name__})"
    else:
        what = f"cannot reach {host} ({reason})"
    return f"{what}{kept}; on a machine with internet run the command again, or {manual}"


def _http_message(err: urllib.error.HTTPError, url: str, manual: str) -> str:
    if err.code == 407:
        return (
            f"the proxy asks for a login (HTTP 407) for {url}: set HTTPS_PROXY / HTTP_PROXY to "
            "http://user:password@host:port, or unset them"
        )
    return f"HTTP {err.code} {err.reason} for {url}: the address may have moved; {manual}"


def _expected_total(response, offset: int) -> int | None:
    """Whole-file size from ``Content-Range`` (partial reply) or ``Content-Length``."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return int(length) + offset if length and length.isdigit() else None


def _stream(url: str, part: Path, progress: bool, desc: str) -> None:
    """Append the missing bytes of ``url`` to ``part`` (from scratch when the server ignores Range)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "samllava", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    opener = urllib.request.build_opener()  # per call: reads the proxy variables as they are now
    with opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as response:
        if have and getattr(response, "status", None) != 206:
            have = 0  # the server sent the whole file: start again
        total = _expected_total(response, have)
        with (
            open(part, "ab" if have else "wb") as out,
            tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress
            ) as bar,
        ):
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size < total:
        raise ConnectionResetError(f"{part.stat().st_size} of {total} bytes received")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    progress: bool = True,
    desc: str | None = None,
    manual: str = "download the file by hand",
) -> Path:
    """Fetch ``url`` to ``dest``: resumable, checked against ``sha256``, renamed into place when verified.

    Args:
        url: ``https://``, ``http://`` or ``file://`` address.
        dest: final path; returned at once when it already exists (it was verified when written).
        sha256: the published checksum (None: no check).
        progress: show a progress bar (tqdm).
        desc: label of the progress bar (default: the file name).
        manual: what the user can do instead, appended to network errors ("put it at ...").

    Raises:
        DownloadError: one line (offline, proxy, HTTP status, cut connection, checksum). A cut
            connection keeps ``<dest>.part`` for the next call to resume; a wrong checksum deletes it.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    try:
        _stream(url, part, progress, desc or dest.name)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not part.exists():  # 416: the partial file may already be whole
            raise DownloadError(_http_message(err, url, manual)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise DownloadError(_network_message(err, url, part, manual)) from None
    verify(part, sha256, url, progress=progress)
    os.replace(part, dest)
    return dest
