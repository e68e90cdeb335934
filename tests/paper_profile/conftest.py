"""The paper profile's files and loading road in CI (issue #35): random weights in the official formats, at the
paper's widths with few layers, fetched and resolved as downloaded files are. Run alone: pytest tests/paper_profile.

The files (benchmarks/paper_files.py, ``PaperFiles.reduced()``) and how they differ from the real ones:

* CLIP, open_clip ViT-B-16 (``vit_b_16-laion400m_e32.pt``): 3 blocks per tower instead of 12; widths 768/512,
  heads 12/8, patch 16, the text vocabulary (49,408) and context (77) as published; written at 224 px like the
  published file (the profile runs it at 240 px, the positional embedding resized on load). Three blocks, not two,
  so that the profile's three tapped layers stay three: the zero-shot map reads blocks (1, 2, 3) instead of
  (6, 9, 12), the few-shot memory (1, 2, 3) instead of (3, 8, 12). Saved as open_clip's training script saves a
  checkpoint (``{"epoch", "name", "state_dict"}``, ``module.`` keys); the same reader takes a bare state dict.
* SAM ViT-H (``sam_vit_h_4b8939.pth``): 2 encoder blocks instead of 32 (width 1,280, 16 heads, patch 16, window
  14, global attention in the second block), every key name as segment_anything's ``Sam.state_dict()``. At
  1,024 px for ``diagnose``; ``train``, ``evaluate`` and the loading of many images read a second file written at
  256 px (positional embedding 16 x 16 instead of 64 x 64, the global block's relative positions 31 instead of
  127), given through ``SAMLLAVA_SAM_VIT_H``: at 1,024 px SAM's encoder reads 16 times the tokens per image.
* LLaVA-1.5-7B (``llava-1.5-7b-hf``, written by ``save_pretrained``): Vicuna with 1 layer instead of 32 (width
  4,096 and 32 heads as Vicuna-7B; MLP width 1,024 instead of 11,008; 1,024 embedding rows instead of 32,064);
  the CLIP ViT-L/14-336 tower with 2 layers instead of 24 (width 1,024, 16 heads, MLP 4,096, 336 px, patch 14; 2
  so that LLaVA's second-to-last layer is a block's output); float16 in 4 shards of at most 100 MB (the real
  folder: 3 of at most 5 GB). The tokenizer is a Llama tokenizer (byte-fallback BPE in ``tokenizer.json``) of
  about 800 tokens trained offline on the domain's sentences instead of Vicuna's 32,000, with ``<image>`` and
  ``<pad>`` after its vocabulary as LLaVA-1.5 adds them (ids about 800 instead of 32,000 and 32,001); no
  ``tokenizer.model`` (sentencepiece is not installed; the folder check takes either file).
* Every weight is random. The profile (``PaperFiles.profile``) is the paper's with ``clip.depth``, ``clip.layers``,
  ``fewshot.layers``, ``sam.depth`` (and ``sam.image_size`` 256 for the second file) changed, nothing else.

Resolution: ``samllava fetch-weights`` downloads CLIP and SAM from ``file://`` addresses that the test registers
in the weights registry with the files' SHA-256 (the real entries name the published addresses and checksums),
and LLaVA comes through :func:`samllava.assets.weights.fetch` from a fake Hugging Face Hub on 127.0.0.1 at the
pinned revision, listing each shard's SHA-256 and each other file's git blob id; every file is verified on
arrival, lands in ``$SAMLLAVA_WEIGHTS_DIR`` and is resolved from there, the 256-px SAM file through its
environment variable. ``reproduce --smoke`` runs every notebook on the same formats at tiny widths
(``PaperFiles.tiny()``, tests/paper_profile/test_reproduce.py says why).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Iterator

import pytest

from paper_files import PaperFiles, write_all, write_sam  # benchmarks/paper_files.py
from samllava.assets import weights
from samllava.cli import main
from samllava.core.config import Profile
from samllava.data import generate_synthetic
from tests.conftest import PROXY_VARIABLES
from tests.fileserver import FileServer

SHARD_BYTES = 100_000_000  # several shards and an index, as the real folder has
PAPER_ENV = ("SAMLLAVA_CLIP_VIT_B16", "SAMLLAVA_SAM_VIT_H", "SAMLLAVA_LLAVA_7B")
LFS = (".safetensors", ".model")  # what the Hub stores in LFS (SHA-256 listed) in llava-1.5-7b-hf


def write_profile(profile: Profile, path: Path) -> Path:
    """A profile JSON for ``--profile PATH`` (its name stays ``paper``)."""
    path.write_text(json.dumps(profile.to_dict(), indent=1))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def paper_files(tmp_path_factory) -> dict[str, Path]:
    """The reduced files, as a download would offer them: ``{"clip", "sam", "llava", "sam_256"}``."""
    root = tmp_path_factory.mktemp("offered")
    paths = write_all(PaperFiles.reduced(), root, SHARD_BYTES, save_pretrained=True)
    paths["sam_256"] = write_sam(PaperFiles.reduced(sam_image_size=256), root / "sam_vit_h_256px.pth")
    return paths


def serve_hub(server: FileServer, folder: Path, repo: str, revision: str) -> None:
    """Serve ``folder`` as the Hub serves ``repo`` at ``revision``: a tree listing (git blob ids, LFS SHA-256) and
    ``/resolve/`` addresses."""
    entries = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        data, name = f.read_bytes(), f.relative_to(folder).as_posix()
        entry = {"type": "file", "path": name, "size": len(data),
                 "oid": hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()}
        if name.endswith(LFS):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        entries.append(entry)
        server.files[f"/{repo}/resolve/{revision}/{name}"] = data
    listing = json.dumps(entries).encode()
    server.routes[f"/api/models/{repo}/tree/{revision}"] = lambda req: (200, {"Content-Type": "application/json"},
                                                                        listing)
    server.extra_headers = lambda path: {"X-Repo-Commit": revision,
                                         "ETag": f'"{hashlib.sha1(server.files[path]).hexdigest()}"'}


@pytest.fixture(scope="package")
def isolated(tmp_path_factory):
    """For the tests of this folder: a fresh ``$SAMLLAVA_WEIGHTS_DIR`` (default models too), data and checkpoint
    folders, no proxy and none of the paper weights' variables. Yields the weights folder."""
    cache = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        for name in PROXY_VARIABLES + PAPER_ENV:
            mp.delenv(name, raising=False)
        mp.setenv(weights.CACHE_ENV, str(cache))
        mp.setenv("SAMLLAVA_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        mp.setenv("SAMLLAVA_CHECKPOINT_DIR", str(tmp_path_factory.mktemp("checkpoints")))
        yield cache


@pytest.fixture(scope="package")
def paper_weights(isolated, paper_files) -> Path:
    """The files fetched into the weights folder through the registry, checked on arrival; returns the folder."""
    fetch(paper_files)
    return isolated


def fetch(paper_files: dict[str, Path]) -> None:
    """``samllava fetch-weights`` for CLIP and SAM (registry entries pointing at the files, with their SHA-256, for
    the download alone), and the LLaVA folder from a fake Hub."""
    with pytest.MonkeyPatch.context() as mp:
        for wid, part in (("clip_vit_b16_laion400m", "clip"), ("sam_vit_h", "sam")):
            path = paper_files[part]
            mp.setitem(weights.REGISTRY, wid, dataclasses.replace(
                weights.spec(wid), url=path.as_uri(), sha256=sha256(path), size=path.stat().st_size))
        assert main(["fetch-weights", "clip_vit_b16_laion400m", "sam_vit_h", "--quiet"]) == 0
    llava = weights.spec("llava_1_5_7b")
    server = FileServer()
    try:
        serve_hub(server, paper_files["llava"], llava.hf_repo, llava.hf_revision)
        weights.fetch("llava_1_5_7b", progress=False, endpoint=server.url)
    finally:
        server.close()


@pytest.fixture(scope="session")
def profiles(tmp_path_factory) -> dict[str, Path]:
    """``--profile`` files: the reduced paper profile at SAM's 1,024 px and at 256 px."""
    root = tmp_path_factory.mktemp("profiles")
    return {"1024": write_profile(PaperFiles.reduced().profile(), root / "paper_1024.json"),
            "256": write_profile(PaperFiles.reduced(sam_image_size=256).profile(), root / "paper_256.json")}


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """One MVTec-layout category with masks: 2 normal training images, a defective and a normal test image."""
    return generate_synthetic(tmp_path_factory.mktemp("small"), categories=["fabric"], n_train=2, n_test=2, size=256,
                              seed=0)


@contextlib.contextmanager
def sam_256(paper_files: dict[str, Path]) -> Iterator[None]:
    """Inside: ``SAMLLAVA_SAM_VIT_H`` names the 256-px SAM file (the environment variable takes precedence over
    the fetched 1,024-px file)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAMLLAVA_SAM_VIT_H", str(paper_files["sam_256"]))
        yield


@pytest.fixture(scope="package")
def trained(paper_weights, paper_files, profiles, small_data, tmp_path_factory) -> Path:
    """``samllava train --profile <paper, 256 px> --data small --epochs 1``: one step on the two test images."""
    out = tmp_path_factory.mktemp("run")
    with sam_256(paper_files):
        assert main(["train", "--profile", str(profiles["256"]), "--data", str(small_data), "--out", str(out),
                     "--epochs", "1", "--shots", "1", "--no-progress", "--device", "cpu"]) == 0
    return out
