"""Zero-shot coarse heatmap from frozen CLIP (Sec. 3.1, the H_coarse of Eq. 1).

For each chosen block, patch tokens go through the visual tower's final LayerNorm (``ln_post``)
and projection (``proj``) into the joint space, are L2-normalised and scored against the two
state embeddings {normal, anomalous} with ``softmax(cos / temperature)``; the anomalous
probability on the patch grid is upsampled bilinearly to the input side, averaged over blocks
and Gaussian-blurred (WinCLIP / AnomalyCLIP practice).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from samllava.core.config import ClipConfig
from samllava.coarse.backbone import ImagePreprocess, check_layers, clip_block_tokens
from samllava.coarse.prompts import prompt_sentences


def gaussian_blur_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (B, H, W) maps with a Gaussian of ``sigma`` pixels (kernel 2*ceil(3 sigma)+1); 0 = identity."""
    if sigma <= 0:
        return maps
    side = min(maps.shape[-2:])
    k = min(2 * math.ceil(3 * sigma) + 1, 2 * side - 1)  # reflect padding needs k // 2 < side
    return TF.gaussian_blur(maps.unsqueeze(1), kernel_size=[k, k], sigma=[sigma, sigma]).squeeze(1)


class ZeroShotLocalizer(nn.Module):
    """Frozen CLIP -> anomaly heatmap H (B, S, S) in [0, 1] and image score (B,).

    Args:
        clip_model: an open_clip ``CLIP`` with a ViT visual tower (built by ``build_clip``).
        tokenizer: its tokenizer (``open_clip.get_tokenizer``).
        cfg: input side, 1-based ``layers``, ``temperature``, ``blur_sigma``.
    """

    def __init__(self, clip_model: nn.Module, tokenizer: Callable, cfg: ClipConfig) -> None:
        super().__init__()
        visual = getattr(clip_model, "visual", None)
        if visual is None or not all(
            hasattr(visual, a) for a in ("forward_intermediates", "ln_post", "proj", "grid_size")
        ):
            raise ValueError(
                "ZeroShotLocalizer needs an open_clip ViT visual tower (forward_intermediates, ln_post, proj)"
            )
        if visual.proj is None:
            raise ValueError(
                "the CLIP visual tower has no projection (proj is None); patch tokens cannot reach the text space"
            )
        if cfg.temperature <= 0:
            raise ValueError(f"clip.temperature must be > 0, got {cfg.temperature}")
        self.model = clip_model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.indices = check_layers(cfg.layers, len(visual.transformer.resblocks), "clip")
        self.preprocess = ImagePreprocess(cfg.image_size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> "ZeroShotLocalizer":
        return super().train(False)  # frozen CLIP (Sec. 3.1)

    # ----------------------------------------------------------------- text side
    def encode_text(self, sentences: Sequence[str]) -> torch.Tensor:
        """L2-normalised embeddings (N, D) of ``sentences``."""
        if not sentences:
            raise ValueError("no prompt sentences to encode")
        device = next(self.model.parameters()).device
        with torch.device("cpu"):  # open_clip's tokenizer makes its tensor with the default device
            tokens = self.tokenizer(list(sentences))
        tokens = tokens.to(device)
        return F.normalize(self.model.encode_text(tokens), dim=-1)

    def encode_prompts(self, normal: Sequence[str], anomalous: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised embeddings of both groups in one text pass: (N_normal, D), (N_anomalous, D)."""
        emb = self.encode_text([*normal, *anomalous])
        return emb[: len(normal)], emb[len(normal):]

    @staticmethod
    def state_features(normal_emb: torch.Tensor, anomalous_emb: torch.Tensor) -> torch.Tensor:
        """(2, D): per state, the mean of the normalised prompt embeddings, normalised again (WinCLIP)."""
        return F.normalize(torch.stack([normal_emb.mean(0), anomalous_emb.mean(0)]), dim=-1)

    def text_features(self, sentences_normal: Sequence[str], sentences_anomalous: Sequence[str]) -> torch.Tensor:
        """(2, D) text features, row 0 normal, row 1 anomalous."""
        return self.state_features(*self.encode_prompts(sentences_normal, sentences_anomalous))

    def text_tokens(self, sentences_normal: Sequence[str], sentences_anomalous: Sequence[str]) -> torch.Tensor:
        """(N_prompts, D) all normalised prompt embeddings, normal first (T_clip of SASA, Eq. 7)."""
        return torch.cat(self.encode_prompts(sentences_normal, sentences_anomalous))

    # ---------------------------------------------------------------- image side
    def _anomaly_prob(self, feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """P(anomalous) of L2-normalised (..., D) features against (2, D) text features -> (...)."""
        logits = F.normalize(feats, dim=-1) @ text_feats.t() / self.cfg.temperature
        return logits.softmax(-1)[..., 1]

    def forward(self, images: torch.Tensor, text_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1's H_coarse and an image score.

        Args:
            images: (B, 3, S, S) in [0, 1].
            text_feats: (2, D) from :meth:`text_features` (row 1 = anomalous).

        Returns:
            heatmap (B, S, S) in [0, 1]; image_score (B,) in [0, 1] = mean of the class-token
            probability (``encode_image`` vs the text) and the heatmap maximum (WinCLIP-style:
            the global token sees context, the map maximum sees small defects).
        """
        visual = self.model.visual
        if text_feats.ndim != 2 or text_feats.shape[0] != 2 or text_feats.shape[1] != visual.proj.shape[1]:
            raise ValueError(
                f"text_feats must be (2, {visual.proj.shape[1]}) (normal, anomalous), got {tuple(text_feats.shape)}"
            )
        side = images.shape[-1]
        x = self.preprocess(images)  # (B, 3, s, s) CLIP-normalised
        tokens, pooled = clip_block_tokens(visual, x, self.indices, pooled=True)  # [(B, N, W)], (B, D)
        text_feats = text_feats.to(x.dtype)
        b, (gh, gw) = x.shape[0], visual.grid_size
        maps = []
        for t in tokens:  # one per chosen block (not per patch)
            # Final LayerNorm and projection into the joint space, as the class token gets them.
            prob = self._anomaly_prob(visual.ln_post(t) @ visual.proj, text_feats)  # (B, N)
            grid = prob.view(b, 1, gh, gw)
            maps.append(F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False))
        heatmap = gaussian_blur_maps(torch.cat(maps, 1).mean(1), self.cfg.blur_sigma)  # (B, S, S)
        cls_prob = self._anomaly_prob(pooled, text_feats)  # (B,)
        score = 0.5 * (cls_prob + heatmap.flatten(1).amax(1))
        return heatmap, score


class TextCache:
    """Text features computed once per category phrase.

    ``get(phrase)`` -> (2, D) state features; ``tokens(phrase)`` -> (N_prompts, D) prompt
    embeddings. Both come from one text pass, stored under the phrase.
    """

    def __init__(self, localizer: ZeroShotLocalizer) -> None:
        self.localizer = localizer
        self._store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _entry(self, phrase: str) -> tuple[torch.Tensor, torch.Tensor]:
        if phrase not in self._store:
            with torch.no_grad():  # frozen text tower: cache plain tensors, no graph
                normal, anomalous = self.localizer.encode_prompts(*prompt_sentences(phrase))
            self._store[phrase] = (ZeroShotLocalizer.state_features(normal, anomalous), torch.cat([normal, anomalous]))
        return self._store[phrase]

    def get(self, phrase: str) -> torch.Tensor:
        return self._on_device(phrase)[0]

    def tokens(self, phrase: str) -> torch.Tensor:
        return self._on_device(phrase)[1]

    def _on_device(self, phrase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The entry, moved (once) to where CLIP is now: a model moved after caching keeps working."""
        entry = self._entry(phrase)
        device = next(self.localizer.model.parameters()).device
        if entry[0].device != device:
            entry = self._store[phrase] = (entry[0].to(device), entry[1].to(device))
        return entry

    def __contains__(self, phrase: str) -> bool:
        return phrase in self._store

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()
