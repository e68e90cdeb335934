"""CLIP-SAM cascade (Sec. 3.1, Eq. 3-4): coarse mask -> SAM prompts -> fine mask.

``SamCascade.embed`` runs SAM's costly image encoder once per image (frozen; callers cache the
result, as ``SamPredictor.set_image`` does); ``forward`` turns a batch of coarse masks into prompts
and decodes them against the cached embeddings, batched over images.

Prompt variants (``SamConfig.prompt``, Tables 7 and 10):

* ``"mask"``: the coarse mask as low-res logits (``prompts.mask_to_logits``) in ``mask_input``,
  plus the multi-scale prompt (Eq. 5) when ``MultiScaleConfig.prompt_learner`` is on;
* ``"box"``: the box of the largest coarse component; ``"point"``: one positive point per component;
* ``"mask+box"``: both of the above;
* ``"none"``: no prompt from CLIP at all (Table 7 "w/o cascade"): SAM with no prompt.

Empty coarse masks. A mask prompt stays valid (``-c`` logits everywhere: "nothing here"). An
image with no component has no box or point: it gets SAM's "not a point" embedding (label -1,
SAM's own padding for absent points) in place of its sparse tokens, which keeps one token count
per batch; so an empty image under ``"box"``/``"point"`` is decoded without a prompt.

Non-square and odd sizes follow SAM's geometry: resize the longest side to the encoder side, pad
bottom/right, and undo both on the output (``Sam.postprocess_masks``).
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from samllava.assets import weights
from samllava.core.config import MultiScaleConfig, Profile, SamConfig
from samllava.core.device import resolve_device, tower_dtype
from samllava.core.seeding import seeded, training_init_seed
from samllava.coarse.backbone import FeatureExtractor, build_feature_extractor
from samllava.sam.backbone_encoder import Adapter, BackboneEncoder, FrameOnly
from samllava.sam.build import build_sam
from samllava.sam.multiscale import MultiScaleMaskDecoder, MultiScalePromptLearner
from samllava.sam.prompts import boxes_from_mask, mask_to_logits, points_from_mask, resize_pad_mask

PROMPTS = ("mask", "box", "point", "mask+box", "none")


@dataclass
class SamOutput:
    """What the fine segmentation stage returns for B images of size H x W."""

    branch_logits: dict[str, torch.Tensor]  # {"high","mid","low"} or {"mid"}: (B, Nm, h_s, w_s), SAM frame
    iou: torch.Tensor  # (B, Nm) predicted IoU of the candidates
    best: torch.Tensor  # (B,) int64 index of the kept candidate (highest predicted IoU)
    logits: torch.Tensor  # (B, H, W) logits of the kept mid mask at the image size
    mask: torch.Tensor  # (B, H, W) bool, M_fine = sigmoid(logits) > 0.5

    def kept_branches(self) -> dict[str, torch.Tensor]:
        """The kept candidate of every branch: ``{branch: (B, 1, h_s, w_s)}`` (for Eq. 6)."""
        rows = torch.arange(self.best.shape[0], device=self.best.device)
        return {name: x[rows, self.best].unsqueeze(1) for name, x in self.branch_logits.items()}


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class SamCascade(nn.Module):
    """SAM driven by the coarse mask (Eq. 3-4) with the multi-scale parts of Sec. 3.2.

    Args:
        sam: a segment_anything ``Sam`` (see :mod:`samllava.sam.build`); its image encoder is frozen.
        cfg: prompt type, mask logit magnitude.
        ms: which multi-scale parts are on, and the pooling kernels.
        max_points: positive points per image for the ``"point"`` prompt.
        box_components: how many of the largest components the ``"box"`` prompt encloses.
        extractor: a frozen backbone standing in for SAM's image encoder (``sam.encoder =
            "fewshot_backbone"``, :mod:`samllava.sam.backbone_encoder`); a trained :class:`Adapter`
            then maps its features to SAM's embedding. None: SAM's own ViT.
    """

    def __init__(self, sam: Sam, cfg: SamConfig, ms: MultiScaleConfig, max_points: int = 4,
                 box_components: int = 1, extractor: FeatureExtractor | None = None) -> None:
        super().__init__()
        self.encoder = self.adapter = None
        if extractor is not None:
            self.encoder = BackboneEncoder(extractor.requires_grad_(False), sam.prompt_encoder.image_embedding_size[0])
            sam.image_encoder = FrameOnly(sam.image_encoder.img_size)
            side = extractor.preprocess.size
            probe = torch.zeros(1, 3, side, side, device=extractor.preprocess.mean.device)  # the levels' widths
            self.adapter = Adapter(self.encoder(probe).shape[1], sam.prompt_encoder.embed_dim)
        if cfg.prompt not in PROMPTS:
            raise ValueError(f"unknown SAM prompt {cfg.prompt!r}; known: {list(PROMPTS)}")
        self.sam = sam
        self.cfg = cfg
        self.ms = ms
        self.max_points = max_points
        self.box_components = box_components
        self.sam.image_encoder.requires_grad_(False)
        channels = sam.prompt_encoder.embed_dim
        uses_mask = "mask" in cfg.prompt
        self.prompt_learner = (
            MultiScalePromptLearner(channels, ms.kernels) if (ms.prompt_learner and uses_mask) else None
        )
        self.decoder = MultiScaleMaskDecoder(sam.mask_decoder, multiscale=ms.decoder)
        self.resize = ResizeLongestSide(sam.image_encoder.img_size)

    def with_prompt(self, prompt: str) -> "SamCascade":
        """This trained cascade prompted with ``prompt`` instead (the prompt types of Tables 7 and 10):
        every module is shared (encoder or stand-in and adapter, prompt encoder, multi-scale prompt learner
        where the new prompt uses one, decoder), only the prompt differs."""
        v = SamCascade(self.sam, dataclasses.replace(self.cfg, prompt=prompt), self.ms, self.max_points,
                       self.box_components)
        v.encoder, v.adapter, v.decoder = self.encoder, self.adapter, self.decoder
        if v.prompt_learner is not None and self.prompt_learner is not None:
            v.prompt_learner = self.prompt_learner
        return v.train(self.training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Prompt encoder, mask decoder, the multi-scale parts (Sec. 3.5) and the stand-in's adapter; never
        the image encoder (SAM's ViT or the frozen backbone)."""
        frozen = {id(p) for m in (self.sam.image_encoder, self.encoder) if m is not None for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in frozen]

    @property
    def encoder_label(self) -> str:
        """What computes F_sam, for tables and the weights label."""
        return self.encoder.label if self.encoder is not None else "SAM ViT image encoder"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """SAM's input: (B, 3, H, W) float in [0, 1] -> (B, 3, side, side) normalised and padded.

        Longest side resized to ``image_encoder.img_size`` (bilinear, antialiased, as
        ``ResizeLongestSide.apply_image_torch``), 0-255 scale, SAM's pixel mean/std, padded
        bottom/right with zeros (``Sam.preprocess``).
        """
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be float (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        lo, hi = images.min().item(), images.max().item()
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        images = images.to(self.sam.pixel_mean.device)  # images enter SAM where SAM is
        h, w = images.shape[-2:]
        size = ResizeLongestSide.get_preprocess_shape(h, w, self.resize.target_length)
        x = images * 255.0
        if size != (h, w):
            # no bf16 CPU kernel
            x = F.interpolate(x.float(), size, mode="bilinear", align_corners=False, antialias=True).to(
                x.dtype
            )
        return self.sam.preprocess(x)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen, costly part of F_sam (Eq. 3): (B, 3, H, W) in [0, 1] -> (B, C', h, w); compute once
        per image. SAM's own embedding (C' = C), or the stand-in backbone's stacked features (then
        :meth:`image_embedding` applies the trained adapter).

        SAM's encoder runs in its own dtype (bfloat16 weights on a GPU, :mod:`samllava.core.device`); its
        embeddings come out in the dtype of the prompt encoder and decoder that read them."""
        if self.encoder is not None:
            return self.encoder(images)
        encoder = self.sam.image_encoder
        x = self.preprocess(images).to(encoder.patch_embed.proj.weight.dtype)
        return encoder(x).to(self.sam.prompt_encoder.point_embeddings[0].weight.dtype)

    def image_embedding(self, embedded: torch.Tensor) -> torch.Tensor:
        """F_sam (B, C, h, w) from :meth:`embed`'s output: the adapter's output for the stand-in, else unchanged."""
        return embedded if self.adapter is None else self.adapter(embedded)

    def prompt_embeddings(self, coarse: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """E_prompt of Eq. 3: sparse (B, T, C) and dense (B, C, h, w) prompt embeddings for the B coarse masks."""
        encoder = self.sam.prompt_encoder
        dtype = encoder.point_embeddings[0].weight.dtype  # prompts follow the model's dtype (bf16 on GPUs)
        b, size = coarse.shape[0], tuple(coarse.shape[-2:])
        kind = self.cfg.prompt
        masks = points = boxes = None
        present = None  # (B,) images that have a sparse prompt
        if "mask" in kind:
            masks = mask_to_logits(coarse, encoder.mask_input_size[0], self.cfg.mask_logit).to(device, dtype)
        if "box" in kind:
            boxes = boxes_from_mask(coarse, self.box_components).to(device)
            present = ~boxes.isnan().any(1)
            boxes = self.resize.apply_boxes_torch(boxes.nan_to_num(0.0), size).to(dtype)
        if kind == "point":
            coords, labels = points_from_mask(coarse, self.max_points)
            points = (self.resize.apply_coords_torch(coords.to(device), size).to(dtype), labels.to(device))
        sparse, dense = encoder(points=points, boxes=boxes, masks=masks)
        if present is not None:
            sparse = torch.where(present[:, None, None], sparse, encoder.not_a_point_embed.weight.expand_as(sparse))
        if kind == "none":  # the prompt encoder returns batch 1 without any prompt
            sparse, dense = sparse.expand(b, -1, -1), dense.expand(b, -1, -1, -1)
        if self.prompt_learner is not None and masks is not None:  # the multi-scale prompt comes with the mask
            dense = dense + self.prompt_learner(
                resize_pad_mask(coarse, encoder.image_embedding_size[0]).to(device, dtype)
            )
        return sparse, dense

    def forward(self, embeddings: torch.Tensor, coarse_masks: torch.Tensor,
                image_size: int | tuple[int, int]) -> SamOutput:
        """Eq. 3-4: fine masks of B images from their cached embeddings and coarse masks.

        Args:
            embeddings: (B, C', h, w) from :meth:`embed`.
            coarse_masks: (B, H', W') bool/float M_coarse, same aspect ratio as the images.
            image_size: output size, S or (H, W): the images' size before SAM's resizing.

        Returns:
            :class:`SamOutput`; the kept candidate has the highest predicted IoU (Sec. 3.1).
        """
        embeddings = self.image_embedding(embeddings)
        if coarse_masks.ndim != 3 or coarse_masks.shape[0] != embeddings.shape[0]:
            raise ValueError(f"coarse masks must be (B, H, W) with B = {embeddings.shape[0]} embeddings, "
                             f"got shape {tuple(coarse_masks.shape)}")
        if embeddings.shape[1:] != (self.sam.prompt_encoder.embed_dim, *self.sam.prompt_encoder.image_embedding_size):
            raise ValueError(f"embeddings must be (B, {self.sam.prompt_encoder.embed_dim}, "
                             f"{self.sam.prompt_encoder.image_embedding_size}), got {tuple(embeddings.shape)}")
        out_h, out_w = _pair(image_size)
        mh, mw = coarse_masks.shape[-2:]
        if abs(mh / mw - out_h / out_w) > 0.02 * (out_h / out_w):
            raise ValueError(f"coarse masks {mh}x{mw} and images {out_h}x{out_w} differ in aspect ratio")
        sparse, dense = self.prompt_embeddings(coarse_masks, embeddings.device)
        logits, iou = self.decoder(embeddings, self.sam.prompt_encoder.get_dense_pe(), sparse, dense,
                                   multimask_output=True)  # SAM's 3 candidates; the best predicted IoU is kept
        best = iou.argmax(dim=1)
        kept = logits["mid"][torch.arange(best.shape[0], device=best.device), best].unsqueeze(1)  # (B, 1, 4h, 4w)
        input_size = ResizeLongestSide.get_preprocess_shape(out_h, out_w, self.resize.target_length)
        full = self.sam.postprocess_masks(kept, input_size=input_size, original_size=(out_h, out_w))[:, 0]
        return SamOutput(branch_logits=logits, iou=iou, best=best, logits=full, mask=full > 0.0)


def build_cascade(profile: Profile, seed: int = 0, extractor: FeatureExtractor | None = None) -> SamCascade:
    """The profile's SAM (its weights, or random where the profile allows) as a cascade, in eval mode.

    Random weights and the multi-scale parts' initialisation are drawn from ``seed`` offset by the
    training seed ``profile.train.seed`` (:func:`samllava.core.seeding.training_init_seed`): every caller gets
    the same cascade for the same profile and seed.
    With ``sam.encoder = "fewshot_backbone"`` F_sam comes from the few-shot backbone: ``extractor``
    (the coarse stage's, so both share one module and, in :class:`~samllava.model.sam_llava.SamLlava`, one
    forward pass) or a new one (timm backbones only).
    """
    if profile.sam.encoder == "vit":
        extractor = None
    elif profile.sam.encoder == "fewshot_backbone":
        if extractor is None:
            if profile.fewshot.backbone != "timm":
                raise ValueError("sam.encoder 'fewshot_backbone' without an extractor needs fewshot.backbone 'timm'")
            extractor = build_feature_extractor(profile.fewshot, None,
                                                weights.require(profile, "fewshot", profile.fewshot.weights))
    else:
        raise ValueError(f"sam.encoder {profile.sam.encoder!r}: expected 'vit' or 'fewshot_backbone'")
    checkpoint = weights.require(profile, "sam", profile.sam.weights)
    with seeded(training_init_seed(seed, profile.train.seed), "sam"):  # what learns starts from the training seed
        sam = build_sam(profile.sam, checkpoint)
        return SamCascade(sam, profile.sam, profile.multiscale, extractor=extractor).eval()


def place_cascade(cascade: SamCascade, profile: Profile, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None) -> SamCascade:
    """``cascade`` moved to ``device`` (:func:`samllava.core.device.resolve_device`) with SAM's frozen image
    encoder in its dtype there: ``gpu.sam_dtype`` on a GPU, float32 on the CPU, or ``dtype``
    (:func:`samllava.core.device.tower_dtype`); the trainable parts (and a few-shot backbone standing in for
    the encoder, shared with the coarse stage) stay float32."""
    dev = resolve_device(device)
    cascade.sam.image_encoder.to(tower_dtype(profile.gpu.sam_dtype, dev, dtype))
    return cascade.to(dev)
