"""A stand-in for SAM's image encoder where no SAM weights exist: a frozen real backbone plus an adapter.

No package ships SAM weights, and a random ViT gives SAM nothing to segment with. The offline
profile (``sam.encoder = "fewshot_backbone"``) instead feeds SAM's prompt encoder and multi-scale
mask decoder with the features of the frozen few-shot backbone (the packaged ImageNet
EfficientNet-Lite0, the same module and the same activations as the few-shot memory):

    F_sam = Adapter(concat_l resize(F_l, g x g))      (B, C, g, g), g = SAM's embedding grid

* :class:`BackboneEncoder` (frozen, no parameters of its own): the backbone's levels resized to SAM's
  embedding grid and stacked along channels, (B, sum C_l, g, g). This is the costly part, cached per
  image like SAM's own embedding;
* :class:`Adapter` (trained with the SAM side): SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv,
  LayerNorm2d) from the stacked channels to SAM's embedding width.

It stands in for a *pretrained* SAM encoder and is labelled as such in every table (the paper
profile keeps SAM ViT-H). :class:`FrameOnly` takes the ViT's place inside ``Sam`` so that SAM's
geometry (input side, padding) stays as it was.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from samllava.coarse.backbone import FeatureExtractor

STAND_IN_LABEL = "SAM image encoder: {backbone}, frozen + trained adapter (a stand-in, not SAM)"


class FrameOnly(nn.Module):
    """Holds SAM's input side (``img_size``) in place of its image encoder; never run."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this SAM has no image encoder of its own: its embeddings come from BackboneEncoder")


class BackboneEncoder(nn.Module):
    """Frozen backbone features at SAM's embedding grid.

    Args:
        extractor: the few-shot backbone (shared with the coarse stage; frozen).
        grid: SAM's embedding side g.
    """

    def __init__(self, extractor: FeatureExtractor, grid: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.grid = grid

    @property
    def label(self) -> str:
        return STAND_IN_LABEL.format(backbone=self.extractor.label)

    def from_maps(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The backbone's per-level maps [(B, C_l, h_l, w_l)] -> (B, sum C_l, g, g), bilinear."""
        g = self.grid
        return torch.cat([F.interpolate(m.float(), size=(g, g), mode="bilinear", align_corners=False).to(m.dtype)
                          for m in maps], dim=1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, sum C_l, g, g)."""
        return self.from_maps(self.extractor(images))


class Adapter(nn.Module):
    """SAM's neck from the backbone's stacked channels to SAM's embedding width (trainable).

    Args:
        in_channels: sum of the backbone's level widths.
        out_channels: SAM's ``prompt_embed_dim``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.neck = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            LayerNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_channels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C_in, g, g) -> (B, C, g, g): F_sam of Eq. 3 in the stand-in."""
        return self.neck(features)
