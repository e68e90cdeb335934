"""Try your own image: upload an image (and a few normal images of the same object) and see what
``samllava diagnose`` says about it: the heatmap overlay, the masks, the verdict and the description.

The panel takes the command line's road, :class:`samllava.diagnose.run.Diagnoser`: the model is the
profile's trained default model unless a checkpoint is given; the normal images set the support (cached
by content, as for ``--support``); the image is read by :func:`samllava.data.load_image`; with
``out_dir``, mask.png, overlay.png (at the image's own size) and report.json are written by
:func:`samllava.diagnose.files.write_outputs`; an image whose size or aspect differs from the normal
images' is warned about, as ``samllava diagnose`` does. Uploads are saved to a temporary folder first, so an
upload and a path are read by the same code.
"""
from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Sequence

import ipywidgets as w
from matplotlib.figure import Figure

from samllava.core.config import Profile, load_profile
from samllava.data import load_image
from samllava.diagnose.files import sizes, write_outputs
from samllava.diagnose.report import report_fields
from samllava.diagnose.run import Diagnoser
from samllava.report.figures import (
    weights_phrase, HeatmapPanel, ImagePanel, MaskPanel, axes_row, figure_png, overlay, to_numpy_image,
)
from samllava.notebook.explorer import used_map_name

WAITING = "Upload an image (png, jpg, bmp, tif) above, or set image_path in the parameters cell."


def diagnosis_figure(image, diagnosis, map_name: str = "coarse map") -> Figure:
    """One row: the image, the overlay ``samllava diagnose`` writes as overlay.png (heatmap and fine
    mask), the coarse map ``map_name`` with its colour bar (M_coarse outlined) and the fine mask M_fine."""
    img = to_numpy_image(image)
    side = img.shape[0]
    fig, (ax_img, ax_ov, ax_heat, ax_fine), cax = axes_row(4, colourbar_after=2)
    ImagePanel(ax_img, side).update(img, "your image")
    ImagePanel(ax_ov, side, ylabel=False).update(overlay(image, mask=diagnosis.fine_mask, heatmap=diagnosis.heatmap),
                                                 "overlay: heatmap + M_fine (red)")
    HeatmapPanel(fig, ax_heat, cax, side).update(diagnosis.heatmap, map_name, mask=diagnosis.coarse_mask,
                                                 title=f"{map_name}, M_coarse outlined")
    fine = diagnosis.fine_mask.astype(bool)
    MaskPanel(ax_fine, side).update(fine, f"fine mask M_fine ({100 * fine.mean():.1f} %)", empty_note="empty mask")
    return fig


def verdict_line(report: dict) -> str:
    """The verdict with the threshold behind it (the calibrated image threshold of the support)."""
    t = (report.get("thresholds") or {}).get("image_threshold")
    if report.get("verdict") is None or t is None:
        return f"score {report['score']:.4g}; verdict: n/a (zero-shot: no calibrated threshold)"
    return f"score {report['score']:.4g}; verdict: {report['verdict']} (image threshold {t:.4g})"


def diagnosis_lines(report: dict, image_name: str, shots: int) -> list[str]:
    """The panel's status: the image and path taken, score and verdict, the model's answer and its description."""
    path = f"few-shot, K = {shots} normal images" if shots else "zero-shot (no normal images)"
    cell = report["fine_mask_position"]
    return [
        f"image: {image_name}; category: {report['category']}; {path}",
        verdict_line(report),
        f"the model's answer (is there a defect?): {report['answer']}; fine mask: {report['fine_mask_pixels']} px"
        + ("" if cell == "none" else f", at the {cell}"),
        f"description: {report['description'].strip() or '(empty)'}",
    ]


def lines_html(lines: Sequence[str], warning: str | None = None, error: str | None = None) -> str:
    parts = []
    if warning:
        parts.append(f'<div style="color:#9a3412;font-weight:bold">{html.escape(warning)}</div>')
    if error:
        parts.append(f'<div style="color:#b91c1c;font-weight:bold">{html.escape(error)}</div>')
    parts += [f"<div>{html.escape(line)}</div>" for line in lines]
    return f'<div style="line-height:1.4;font-size:13px;overflow-wrap:normal;word-break:normal">{"".join(parts)}</div>'


def save_uploads(uploads, folder: Path) -> list[Path]:
    """Write FileUpload values (dicts with ``name`` and ``content``) into ``folder``, replacing what it held."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    paths = []
    for i, u in enumerate(uploads):
        name = Path(u["name"]).name or f"upload_{i}.png"  # no folders from the browser's file name
        paths.append(folder / name)
        paths[-1].write_bytes(bytes(u["content"]))
    return paths


class TryYourOwnImage:
    """The panel: two uploads (the image; normal images), a category, the figure and the status.

    ``image_path`` and ``support_dir`` give the same inputs as files (a headless run diagnoses at once);
    an upload replaces them. ``report`` holds the last diagnosis's report (as report.json), or None.
    """

    def __init__(self, diagnoser: Diagnoser, *, image_path: str | None = None, support_dir: str | None = None,
                 category: str | None = None, out_dir: str | None = None) -> None:
        self.diagnoser, self.profile, self.out_dir = diagnoser, diagnoser.profile, out_dir
        self.image_path = Path(image_path) if image_path else None
        self.support_dir = Path(support_dir) if support_dir else None
        self.report: dict | None = None
        self._fitted: Path | None = None  # the support folder the model holds (fit once per folder)
        self._uploads = Path(tempfile.mkdtemp(prefix="samllava-upload-"))
        wide = {"description_width": "initial"}
        self.upload_image = w.FileUpload(accept="image/*", multiple=False, description="your image")
        self.upload_support = w.FileUpload(accept="image/*", multiple=True, description="normal images",
                                           layout=w.Layout(width="auto"))
        self.category = w.Text(category or "", placeholder="e.g. bottle (empty: any object)", description="category",
                               continuous_update=False, style=wide)
        self.zero_shot = w.Button(description="forget normal images", layout=w.Layout(width="auto"))
        self.status = w.HTML()
        self.image = w.Image(format="png")
        for name in ("upload_image", "upload_support", "category", "zero_shot", "status", "image"):
            getattr(self, name).add_class(f"samllava-try-{name.replace('_', '-')}")
        self.widget = w.VBox([w.HBox([self.upload_image, self.upload_support, self.zero_shot]), self.category,
                              self.status, self.image])
        self.widget.add_class("samllava-try")
        self.upload_image.observe(self._image_uploaded, names="value")
        self.upload_support.observe(self._support_uploaded, names="value")
        self.category.observe(lambda _: self.run(), names="value")
        self.zero_shot.on_click(self._forget_support)
        self.run()

    @property
    def model_line(self) -> str:
        return f"model: {self.diagnoser.checkpoint} (profile {self.profile.name}, {weights_phrase(self.profile)})"

    def _image_uploaded(self, change) -> None:
        if change["new"]:
            self.image_path = save_uploads(change["new"], self._uploads / "image")[0]
            self.run()

    def _support_uploaded(self, change) -> None:
        if change["new"]:
            save_uploads(change["new"], self._uploads / "support")
            self.support_dir, self._fitted = self._uploads / "support", None
            self.run()

    def _forget_support(self, _=None) -> None:
        self.support_dir = self._fitted = None
        self.run()

    def _shots(self) -> int:
        """Fit the support (once per folder); 0 for the zero-shot path, which needs a CLIP with real weights."""
        if self.support_dir is None or self._fitted != self.support_dir:
            self.diagnoser.set_support(self.support_dir)
            self._fitted = self.support_dir
        return self.diagnoser.shots

    def run(self) -> dict | None:
        """Diagnose the current image (nothing without one); show the figure and the status; return the report."""
        if self.image_path is None:
            self.status.value = lines_html([WAITING, self.model_line])
            return None
        self.status.value = lines_html([f"diagnosing {self.image_path.name} ..."])
        size = self.profile.data.image_size
        try:
            image = load_image(self.image_path, size)
            shots = self._shots()
        except (ValueError, FileNotFoundError) as err:
            self.report, self.image.value = None, b""
            self.status.value = lines_html([WAITING, self.model_line], error=str(err))
            return None
        category = self.category.value.strip() or None
        diagnosis = self.diagnoser.diagnose(image[None], category)[0]
        notes = list(self.diagnoser.size_warnings([self.image_path]).values())
        extra = {"image": str(self.image_path), **self.diagnoser.header, "warnings": notes}
        self.report = {**report_fields(diagnosis), **sizes(diagnosis, self.image_path), **extra}
        if self.out_dir is not None:
            write_outputs(diagnosis, self.image_path, self.out_dir, extra,
                          self.diagnoser.provenance(str(self.image_path)))
        map_name = used_map_name(shots, self.diagnoser.model.coarse.use_zero_shot)
        self.image.value = figure_png(diagnosis_figure(image, diagnosis, map_name))
        self.status.value = lines_html(diagnosis_lines(self.report, self.image_path.name, shots) + [self.model_line],
                                       warning="; ".join(notes) or None)
        return self.report


def try_your_own_image(profile: str | Profile | None = None, checkpoint: str | None = None, device=None,
                       **kwargs) -> TryYourOwnImage:
    """The panel over the model ``samllava diagnose`` uses: ``checkpoint``, else the profile's trained default
    model (trained once on first use, as ``samllava train --profile P`` does), on ``device`` (None: CUDA when
    available, :func:`samllava.core.device.resolve_device`); display ``.widget``."""
    profile = profile if isinstance(profile, Profile) else load_profile(profile)
    return TryYourOwnImage(Diagnoser(profile, checkpoint, device=device), **kwargs)
