"""The one road of a diagnosis, taken by ``samllava diagnose`` and by the try-your-own-image panel.

:class:`Diagnoser` holds a loaded model (``--checkpoint``, else the profile's default model, trained
on first use) and the support set it was given; :meth:`Diagnoser.diagnose` judges a batch of images
and :meth:`Diagnoser.run` diagnoses files and writes every output (:mod:`samllava.diagnose.files`).

A support folder's fitted memory is cached on disk by content (the images' bytes, the backbone and the
image side), so a folder of hundreds of normal images is embedded once. Without a support set only the
zero-shot CLIP term judges, which a profile with random CLIP weights refuses
(:func:`samllava.diagnose.signal.no_signal_message`). Images whose size or aspect differs from the support
images' are warned about (:meth:`Diagnoser.size_warnings`): one line for the run, one in each report.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from samllava.assets import weights
from samllava.core.config import Profile
from samllava.core.provenance import provenance
from samllava.core.results import atomic_path
from samllava.data import ImageFiles
from samllava.data.mvtec import list_images
from samllava.diagnose.files import check_readable, diagnose_files, size_summary, size_warnings
from samllava.diagnose.signal import no_signal_message
from samllava.model.checkpoint import load_model
from samllava.model.sam_llava import Diagnosis, SamLlava
from samllava.train.default_model import default_checkpoint


SUPPORT_CACHE_VERSION = 2  # bump when what a fitted support holds changes


def support_digest(files: list[Path], size: int, backbone: str, calibration: list[Path] = ()) -> str:
    """Content key of a support set: the images' bytes in order (then the calibration images'), the image
    side, the backbone and the cache's format."""
    h = hashlib.sha256(f"{SUPPORT_CACHE_VERSION}|{size}|{backbone}|{len(files)}".encode())
    for f in [*files, *calibration]:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def normal_images(folder: str | Path, option: str) -> list[Path]:
    """The images of a folder of normal images, every one readable; a missing or empty folder, or an
    unreadable image, is an error that names the option and the path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {folder}: not a folder of normal images")
    try:
        files = list_images(folder)
        if not files:
            raise ValueError("holds no images (png/jpg/bmp/tif)")
        check_readable(files)
    except ValueError as err:
        raise ValueError(f"{option} {folder}: {err}") from None
    return files


def fit_support(model: SamLlava, folder: str | Path, size: int, cache: bool = True,
                calibration: str | Path | None = None) -> int:
    """Set ``model``'s support from a folder of normal images, from the on-disk cache when its content
    was fitted before; returns K. ``calibration``: a folder of other normal images that calibrate the
    verdict (default: the support images, each left out in turn; :mod:`samllava.coarse.verdict`)."""
    files = normal_images(folder, "--support")
    extra = normal_images(calibration, "--calibration") if calibration is not None else []
    calibrator = model.coarse.calibrator
    key = support_digest(files, size, calibrator.extractor.label, extra)
    path = weights.cache_dir() / "support" / f"{key}.pt"
    if cache and path.is_file():
        model.coarse.set_support_state(torch.load(path, map_location="cpu", weights_only=True))
        return len(files)
    # read in chunks: bounded memory for a folder of hundreds
    model.set_support(ImageFiles(files, size), ImageFiles(extra, size) if extra else None)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(calibrator.support_state(), tmp)
    return len(files)


class Diagnoser:
    """A model ready to diagnose: ``checkpoint`` (None: the profile's default model) on ``device``.

    :meth:`set_support` fits a folder of normal images (or None: zero-shot); :attr:`header` is what every
    report of the run states besides the diagnosis (profile, weights, checkpoint, device, support).
    """

    def __init__(self, profile: Profile, checkpoint: str | Path | None = None, *, device=None, dtype=None,
                 progress: bool = True, model: SamLlava | None = None) -> None:
        self.profile = profile
        self.checkpoint = str(checkpoint if checkpoint is not None
                              else default_checkpoint(profile, progress=progress, device=device))
        self.model = model if model is not None else load_model(profile, self.checkpoint, device=device, dtype=dtype,
                                                                 cache=True)
        self.support: Path | None = None
        self.support_files: list[Path] = []
        self.calibration: Path | None = None
        self.shots = 0
        self.image_size = profile.data.image_size

    def set_support(self, folder: str | Path | None, calibration: str | Path | None = None) -> int:
        """Fit the normal images of ``folder`` (cached by content), or go zero-shot with None; returns K.
        ``calibration``: a folder of other normal images that calibrate the verdict (:func:`fit_support`)."""
        if folder is None:
            message = no_signal_message(self.profile, "diagnose")
            if message:
                raise ValueError(message)
            self.model.set_support(None)
            self.support, self.support_files, self.shots = None, [], 0
            return 0
        self.shots = fit_support(self.model, folder, self.image_size, calibration=calibration)
        self.support, self.calibration = Path(folder), None if calibration is None else Path(calibration)
        self.support_files = list_images(self.support)
        return self.shots

    def size_warnings(self, files: list[Path]) -> dict[Path, str]:
        """Per image of ``files`` whose size or aspect differs from the support images', the line its report
        carries (:func:`samllava.diagnose.files.size_warnings`); empty without a support set."""
        return size_warnings(files, self.support_files)

    @property
    def header(self) -> dict:
        support = None if self.support is None else {"folder": str(self.support), "images": self.shots,
                                                     "calibration": None if self.calibration is None
                                                     else str(self.calibration)}
        return {"profile": self.profile.name, "weights": self.profile.weights_label(), "checkpoint": self.checkpoint,
                "device": str(self.model.device), "support": support}

    def provenance(self, images: str = "") -> dict:
        """The record report.json carries: profile and weights, the data (the normal images by content,
        ``images`` as given), the device."""
        data = {"images": images or "none"}
        if self.support is not None:
            data["support"] = str(self.support)
        if self.calibration is not None:
            data["calibration"] = str(self.calibration)
        return provenance(profile=self.profile, data=data, device=self.model.device)

    def diagnose(self, images: torch.Tensor, category: str | None = None,
                 max_new_tokens: int | None = None) -> list[Diagnosis]:
        """One diagnosis per image of (B, 3, S, S) in [0, 1], against the support set."""
        return self.model.diagnose_with_support(images, category, max_new_tokens)

    def run(self, files: list[Path], out_dir: str | Path, *, category: str | None = None, batch_size: int = 32,
            max_new_tokens: int | None = None, progress: bool = True, warn=None) -> list[dict]:
        """Diagnose image files in batches and write every output and ``summary.csv`` under ``out_dir``.
        ``warn``: called with one line when images differ in size or aspect from the support (default: none;
        each report.json says so under ``warnings`` either way)."""
        run = self.provenance(f"{len(files)} image file(s) under {os.path.commonpath([str(f) for f in files])}")
        warned = self.size_warnings(files)
        line = size_summary(warned, len(files))
        if line and warn is not None:
            warn(line)
        return diagnose_files(self.model, files, out_dir, category=category, size=self.image_size,
                              batch_size=batch_size, max_new_tokens=max_new_tokens, extra=self.header, run=run,
                              progress=progress, warnings=warned)
