"""What several notebooks share, trained once and cached: the SAM side and the end-to-end model.

Both are kept under :func:`samllava.core.paths.checkpoint_dir`, keyed by a digest of what they depend on
(:func:`cache_key`), so a changed profile or budget never picks up a stale file; a finished run is
reused, an interrupted end-to-end run resumes.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from samllava.core.batching import BatchSizer
from samllava.model.checkpoint import CHECKPOINT, load_checkpoint
from samllava.core.config import Profile
from samllava.data import CategoryData, support_images
from samllava.train.default_model import DEFAULT_SHOTS, code_digest
from samllava.core.device import CPU, module_device, to_device
from samllava.evaluate.harness import CoarseMethod
from samllava.model.encoded_data import prepare
from samllava.model.sam_llava import build_model
from samllava.core.paths import checkpoint_dir
from samllava.core.results import atomic_path
from samllava.sam import SamCascade, build_cascade, place_cascade
from samllava.train import fine_stage as sam_train
from samllava.train.end_to_end import train
from samllava.notebook.tables.data import synthetic

# SAM-side steps of the detection tables for a profile without a SAM warm-up (``train.sam_warmup_steps``
# 0, the paper profile: its SAM is pretrained, yet the multi-scale parts still learn from Eq. 6).
SAM_SIDE_STEPS = 200


@torch.no_grad()
def cascade_inputs(coarse, cascade, data: dict[str, CategoryData], shots: int = 1, seed: int = 0,
                   size: int | None = None, batch_size: int = 16):
    """Coarse masks, SAM embeddings and ground truth of every test image (frozen work, done once), on the
    CPU; computed on the cascade's device, in batches that fit there (:class:`samllava.core.batching.BatchSizer`)."""
    size = size or coarse.profile.data.image_size
    gpu = coarse.profile.gpu
    device = module_device(cascade)
    sizer = BatchSizer(device, batch_size, gpu.encode_batch, gpu.memory_fraction)
    masks, embs, gts = [], [], []

    def encode(x: torch.Tensor, name: str, support, calibration) -> None:
        coarse(x, name, support, calibration)
        masks.append(coarse.last_output.mask.cpu())
        embs.append(cascade.embed(x).cpu())

    for name, cat in data.items():
        support, calibration = support_images(cat, shots, seed, size, coarse.profile.fewshot)
        support, calibration = (None if t is None else t.to(device) for t in (support, calibration))
        images = cat.load_images(cat.test, size)
        sizer.run(len(images), lambda i, j, x=images, c=name, s=support, k=calibration: encode(x[i:j].to(device), c,
                                                                                              s, k))
        gts.append(cat.load_masks(cat.test, size)[:, 0])
    return torch.cat(embs), torch.cat(masks), torch.cat(gts)


def placed_cascade(profile: Profile, device: str | torch.device | None = None) -> SamCascade:
    """The profile's cascade (:func:`samllava.sam.build_cascade`, built on the CPU: the same frozen encoder
    as :func:`samllava.model.sam_llava.build_model`'s) on ``device``, SAM's encoder in its dtype there."""
    with torch.device(CPU):
        cascade = build_cascade(profile)
    return place_cascade(cascade, profile, device)


def cache_key(profile: Profile, sections: tuple[str, ...] | None = None, **extra) -> str:
    """A short digest of the profile (or only its ``sections``, e.g. ``("sam", "train")``) and ``extra``
    settings: cached results are keyed by it, so a changed profile (or budget) never picks up a stale
    checkpoint."""
    config = profile.to_dict()
    if sections is not None:
        config = {k: config[k] for k in sections}
    blob = json.dumps({"profile": config, **extra}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


# What the SAM side's training depends on: the coarse stage (its masks are SAM's prompts), SAM, the
# multi-scale parts and the data, plus its own steps, lr, batch size and seed (added by train_cascade);
# not SASA, the language model, LoRA or the end-to-end budget, so e.g. the "w/o SASA" variant and a
# longer end-to-end training reuse the main model's SAM warm-up.
SAM_SIDE_SECTIONS = ("clip", "fewshot", "sam", "multiscale", "data")


def sam_side_state(cascade) -> dict[str, torch.Tensor]:
    """The trainable SAM side (prompt encoder, mask decoder, multi-scale parts, a stand-in's adapter): all but
    the frozen image encoder (SAM's ViT, or the stand-in's backbone)."""
    return {k: v for k, v in cascade.state_dict().items() if not _frozen_encoder_key(k)}


def _frozen_encoder_key(key: str) -> bool:
    return ".image_encoder." in f".{key}" or key.startswith("encoder.")


def train_cascade(
    profile: Profile,
    steps: int | None = None,
    lr: float | None = None,
    shots: int = 1,
    progress: bool = True,
    data: dict[str, CategoryData] | None = None,
    coarse: CoarseMethod | None = None,
    cache: bool = True,
    inputs=None,
    device: str | torch.device | None = None,
):
    """SAM side alone (Sec. 3.2, Eq. 6); image encoder frozen. Detection metrics depend only on the
    coarse stage and SAM, so this is what the detection tables train.

    ``steps``/``lr`` default to the profile's SAM warm-up (``train.sam_warmup_steps``/``sam_warmup_lr``),
    so notebooks 03, 07, 09 and the end-to-end model share one trained SAM side; a profile without a
    warm-up (the paper's: SAM is pretrained) still trains the SAM side :data:`SAM_SIDE_STEPS` steps here.
    ``data`` defaults to the synthetic training set (seed 1); ``shots=0`` trains on zero-shot coarse masks.
    The result is cached under :func:`samllava.core.paths.checkpoint_dir`, keyed by profile, budget and data
    (``cache=False`` retrains). ``inputs``: a callable returning :func:`cascade_inputs` of ``data``,
    for callers that train several variants on the same frozen inputs (called only on a cache miss).
    Returns ``(coarse_method, cascade, losses)``; seeded by ``profile.train.seed``. ``device``: where a
    new coarse stage and the cascade run (None: :func:`samllava.core.device.resolve_device`'s default; a
    given ``coarse`` keeps its device unless ``device`` is given).
    """
    t = profile.train
    steps = (t.sam_warmup_steps or SAM_SIDE_STEPS) if steps is None else steps
    lr = t.sam_warmup_lr if lr is None else lr
    coarse = coarse or CoarseMethod(profile, device=device)
    cascade = placed_cascade(profile, device if device is not None else coarse.device)  # build_model's encoder
    data = data if data is not None else synthetic(profile, "train")
    key = cache_key(profile, SAM_SIDE_SECTIONS, steps=steps, lr=lr, batch_size=t.batch_size, seed=t.seed, shots=shots,
                    data=sorted(str(c.root) for c in data.values()))
    path = checkpoint_dir() / f"{profile.name}-cascade-{key}.pt"
    if cache and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = cascade.load_state_dict(state["sam_side"], strict=False)
        if unexpected or any(not _frozen_encoder_key(k) for k in missing):
            raise ValueError(
                f"{path}: does not fit this cascade (unexpected {unexpected[:3]}, missing {missing[:3]}); delete it"
            )
        return coarse, cascade.eval(), list(state["losses"])
    emb, masks, gt = inputs() if inputs is not None else cascade_inputs(coarse, cascade, data, shots=shots)
    losses = sam_train.train_segmentation(
        cascade, emb, masks, gt, steps=steps, lr=lr, batch_size=t.batch_size, seed=t.seed, progress=progress
    )
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # CPU tensors: the cache serves every device
            torch.save({"sam_side": to_device(sam_side_state(cascade), CPU), "losses": list(losses), "steps": steps,
                        "lr": lr}, tmp)
    return coarse, cascade.eval(), losses


def model_dir(profile: Profile, tag: str = "main", epochs: int | None = None, shots: int = DEFAULT_SHOTS) -> Path:
    """Where :func:`trained_model` keeps the model of ``profile`` trained ``epochs`` (None: the profile's)
    with K=``shots``; keyed by the code the weights depend on too, so an edit never reuses a stale model."""
    epochs = profile.train.epochs if epochs is None else epochs
    key = cache_key(profile, epochs=epochs, shots=shots, code=code_digest())
    return checkpoint_dir() / f"{profile.name}-{tag}-{key}"


def trained_model(profile: Profile, *, tag: str = "main", epochs: int | None = None, shots: int = DEFAULT_SHOTS,
                  overrides: dict | None = None, progress: bool = True, retrain: bool = False,
                  device: str | torch.device | None = None):
    """The profile's end-to-end model trained on the synthetic training set (seed 1), cached.

    Returns ``(model, history)``, the model on ``device`` (:func:`samllava.core.device.resolve_device`). The
    checkpoint lives in ``model_dir(profile, tag, ...)``, keyed by the whole profile and budget; a
    finished run is reused (on any device: checkpoints hold CPU tensors), an interrupted one resumes.
    The SAM warm-up is :func:`train_cascade` with the profile's warm-up budget (cached, shared with the
    segmentation notebooks).
    """
    if overrides:
        profile = profile.replace(**overrides)
    epochs = profile.train.epochs if epochs is None else epochs
    out = model_dir(profile, tag, epochs=epochs, shots=shots)
    model = build_model(profile, device=device)
    done = out / "done.json"
    if done.exists() and not retrain:
        state = load_checkpoint(model, out / CHECKPOINT)
        return model.eval(), state["history"]
    start = time.perf_counter()
    resuming = (out / CHECKPOINT).is_file() and not retrain
    if profile.train.sam_warmup_steps > 0 and not resuming:
        _, warm, _ = train_cascade(profile, shots=shots, progress=progress, device=model.device)
        model.cascade.load_state_dict(sam_side_state(warm), strict=False)
    examples = prepare(model, synthetic(profile, "train"), profile.data.image_size, shots=shots, progress=progress)
    history = train(model, examples, epochs=epochs, out_dir=out, resume=not retrain, progress=progress, warm_up=False)
    done.write_text(json.dumps({"epochs": epochs, "steps": len(history), "seconds": time.perf_counter() - start}))
    return model.eval(), history
