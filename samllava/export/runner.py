"""Diagnose images with an exported model, without torch:
``python -m samllava.export.runner model.onnx IMAGES_OR_FOLDERS... --out OUT``.

Needs numpy, pillow and onnxruntime only (this module and :mod:`samllava.export.numpy_steps` import nothing
else, and ``import samllava`` reads the profiles' dataclasses alone). For each batch of images it runs the
detection graph, judges each image and draws M'_coarse in numpy, runs the fine graph on the images judged
defective and gates SAM's mask (docs/export.md). It writes what ``samllava diagnose`` writes for the
detection part: ``OUT/<name>/mask.png`` (M_fine, 0/255) and ``OUT/summary.csv`` with diagnose's columns
but the description (the language model is not exported; the answer is the verdict's, as
``llm.answer_from_verdict`` starts it). Image names, folder search and file order follow
:mod:`samllava.diagnose.files`; ``summary.csv`` is written last.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from samllava.core.image_files import check_readable, gather_images, output_names
from samllava.export.numpy_steps import coarse_masks, gate, judge, position_on_grid, read_image
from samllava.export.spec import model_files

SUMMARY = "summary.csv"
# samllava.diagnose.files.SUMMARY_COLUMNS without the description
SUMMARY_COLUMNS = ("image", "score", "verdict", "answer", "position", "fine_mask_pixels")


@dataclass
class Detection:
    """What the exported model finds in B images of side S."""

    score: np.ndarray  # (B,) float32, the maximum of the decision map
    defective: np.ndarray  # (B,) bool, the verdict
    decision: np.ndarray  # (B, S, S) float32, the decision map (s_ctx, with CLIP's term where active)
    coarse: np.ndarray  # (B, S, S) bool, M'_coarse
    fine: np.ndarray  # (B, S, S) bool, M_fine gated by the verdict


class Detector:
    """An exported model loaded into onnxruntime (CPU); ``threads``: intra-op threads (None: onnxruntime's)."""

    def __init__(self, model: str | os.PathLike, threads: int | None = None) -> None:
        files = model_files(model)
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{model}: an export has three files; missing {', '.join(missing)}")
        self.spec = json.loads(files["json"].read_text())
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.detect = ort.InferenceSession(str(files["detect"]), options, providers=["CPUExecutionProvider"])
        self.fine = ort.InferenceSession(str(files["fine"]), options, providers=["CPUExecutionProvider"])
        self.side = int(self.spec["input"]["side"])

    def __call__(self, images: np.ndarray) -> Detection:
        """Images (B, 3, S, S) float32 in [0, 1] -> :class:`Detection`."""
        outs = dict(zip(self.spec["outputs"]["detect"], self.detect.run(None, {"images": images.astype(np.float32)})))
        verdict = self.spec["verdict"]
        calibration = outs.get("calibration")
        defective = judge(outs["score"], verdict, None if calibration is None else calibration.T)
        coarse = coarse_masks(outs["decision"], defective, verdict)
        logits = np.zeros(coarse.shape, np.float32)
        if defective.any():  # SAM's mask only matters where the verdict says defective (gate)
            logits[defective] = self.fine.run(None, {"embedding": outs["embedding"][defective],
                                                     "coarse": coarse[defective].astype(np.float32)})[0]
        return Detection(outs["score"], defective, outs["decision"], coarse, gate(logits, coarse, defective))


def write_mask(mask: np.ndarray, size: tuple[int, int], path: Path) -> None:
    """mask.png: M_fine (S, S) as 0/255 at the image's own (width, height), nearest neighbour (as
    :func:`samllava.diagnose.files.full_size`), written beside and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST).save(tmp, format="PNG")
    os.replace(tmp, path)


def run(detector: Detector, files: list[Path], out: str | os.PathLike, batch_size: int = 8) -> list[dict]:
    """Diagnose ``files`` in batches; write ``OUT/<name>/mask.png`` and, last, ``OUT/summary.csv``. Returns
    the summary's rows."""
    out, names, rows = Path(out), output_names(files), []
    for i in range(0, len(files), batch_size):
        images, sizes = zip(*[read_image(f, detector.side) for f in files[i:i + batch_size]])
        found = detector(np.stack(images))
        for j, (f, name) in enumerate(zip(files[i:i + batch_size], names[i:i + batch_size])):
            fine = found.fine[j]
            write_mask(fine, sizes[j], out / name / "mask.png")
            rows.append({"image": str(f), "score": float(found.score[j]),
                         "verdict": "defective" if found.defective[j] else "normal",
                         "answer": "yes" if found.defective[j] else "no", "position": position_on_grid(fine),
                         "fine_mask_pixels": int(fine.sum())})
    tmp = out / (SUMMARY + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / SUMMARY)
    return rows


def main(argv: list[str] | None = None) -> int:
    """The command line; a user error prints one line and returns 2."""
    parser = argparse.ArgumentParser(prog="python -m samllava.export.runner",
                                     description="Diagnose images with an exported SAM-LLaVA detector (no torch).")
    parser.add_argument("model", help="the export's model.onnx (model.fine.onnx and model.json beside it)")
    parser.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder: <name>/mask.png and summary.csv")
    parser.add_argument("--batch-size", type=int, default=8, help="images per run of the graphs (default 8)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    args = parser.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        files = gather_images(args.images)
        check_readable(files)
        detector = Detector(args.model, args.threads)
        rows = run(detector, files, args.out, args.batch_size)
    except (ValueError, FileNotFoundError) as e:
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return 2
    flagged = sum(r["verdict"] == "defective" for r in rows)
    print(f"{len(rows)} image(s), {flagged} judged defective: {Path(args.out) / SUMMARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
