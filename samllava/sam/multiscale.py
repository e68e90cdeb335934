"""Multi-scale prompt learner (Eq. 5) and multi-scale mask decoder (Eq. 6), Sec. 3.2.

Both are built so that, at initialisation, the model is exactly plain SAM:

* the prompt learner's fusion convolution is zero-initialised and its output is *added* to SAM's
  dense prompt embedding, so training starts from SAM's own mask prompt;
* the decoder reuses segment_anything's ``MaskDecoder`` unchanged (its transformer, tokens,
  upscaling, hypernetworks and IoU head): branch ``mid`` *is* SAM's output, and the extra
  branches only read intermediate tensors of SAM's forward.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

BRANCHES = ("high", "mid", "low")  # order of MultiScaleConfig.branch_weights


class _PoolBranch(nn.Module):
    """One scale of Eq. 5: AvgPool(k, stride k) -> ConvTranspose(1 -> C, k, stride k) -> act -> Conv1x1.

    Grids not divisible by ``k`` are zero-padded bottom/right to the next multiple (zero is
    "outside", like SAM's own padding) and the output is cropped back, so every branch returns
    exactly ``h x w``. The activation keeps the three linear layers from collapsing into one linear
    map (SAM's ``mask_downscaling`` puts one between its convolutions too).
    """

    def __init__(self, channels: int, k: int, activation: type[nn.Module]) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"pooling kernel must be >= 1, got {k}")
        self.k = k
        self.pool = nn.AvgPool2d(k, stride=k)
        self.up = nn.ConvTranspose2d(1, channels, kernel_size=k, stride=k)
        self.act = activation()
        self.proj = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) -> (B, C, h, w)."""
        h, w = mask.shape[-2:]
        ph, pw = math.ceil(h / self.k) * self.k - h, math.ceil(w / self.k) * self.k - w
        x = self.pool(F.pad(mask, (0, pw, 0, ph)))  # (B, 1, ceil(h/k), ceil(w/k))
        x = self.act(self.up(x))[..., :h, :w]  # (B, C, h, w): G_k
        return self.proj(x)


class MultiScalePromptLearner(nn.Module):
    """Eq. 5: E_multi = [Conv1x1(G_large); Conv1x1(G_medium); Conv1x1(G_small)], fused into SAM's prompt.

    The paper brings the 3C-channel ``E_multi`` "into" the dense prompt embedding without saying
    how. Here a 1x1 convolution 3C -> C, ZERO-INITIALISED, maps it to SAM's prompt width and the
    result is ADDED to the dense embedding of the mask prompt: at initialisation the cascade equals
    plain SAM (pretrained behaviour kept), and training grows the multi-scale term from there.
    """

    def __init__(self, channels: int, kernels: tuple[int, ...] = (8, 4, 2),
                 activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        if not kernels:
            raise ValueError("MultiScalePromptLearner needs at least one pooling kernel")
        self.kernels = tuple(kernels)
        self.branches = nn.ModuleList(_PoolBranch(channels, k, activation) for k in self.kernels)
        self.fuse = nn.Conv2d(len(self.kernels) * channels, channels, kernel_size=1)
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def multi_scale_prompt(self, mask: torch.Tensor) -> torch.Tensor:
        """E_multi of Eq. 5: (B, 1, h, w) coarse mask fraction -> (B, len(kernels) * C, h, w)."""
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"prompt learner input must be (B, 1, h, w), got shape {tuple(mask.shape)}")
        return torch.cat([branch(mask) for branch in self.branches], dim=1)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) coarse mask at the embedding grid -> (B, C, h, w), to add to the dense prompt."""
        return self.fuse(self.multi_scale_prompt(mask))


class MultiScaleMaskDecoder(nn.Module):
    """SAM's mask decoder with the three resolution branches of Eq. 6.

    * ``mid`` (4h x 4w): SAM's own masks, the only branch used at inference (Sec. 3.2);
    * ``low`` (h x w): the transformer's image output, read by an extra hypernetwork MLP per mask
      token (C -> C channels);
    * ``high`` (8h x 8w): SAM's upscaled embedding, upsampled once more by an extra
      ConvTranspose(2, stride 2) + GELU, read by another hypernetwork MLP per token (C -> C/8).

    SAM's ``predict_masks`` runs unchanged; the intermediate tensors are read with forward hooks on
    its ``transformer`` and ``output_upscaling``, so no line of SAM's decoder is copied.

    Batching over images. SAM's decoder takes ONE image and B prompts (it ``repeat_interleave``s the
    image embedding B times and adds the dense prompt). Here each of the B images has one prompt
    set: ``predict_masks`` gets a zero image embedding of batch 1 and ``image + dense`` as the dense
    prompt, which is literally Eq. 4's ``f_mask(F_sam + E_prompt)`` and gives SAM's sum exactly.
    """

    def __init__(self, decoder: MaskDecoder, multiscale: bool = True) -> None:
        super().__init__()
        self.decoder = decoder
        self.multiscale = multiscale
        c, tokens = decoder.transformer_dim, decoder.num_mask_tokens
        if multiscale:
            self.low_hypernetworks = nn.ModuleList(MLP(c, c, c, 3) for _ in range(tokens))
            self.high_upscaling = nn.Sequential(nn.ConvTranspose2d(c // 8, c // 8, kernel_size=2, stride=2), nn.GELU())
            self.high_hypernetworks = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(tokens))

    @property
    def branches(self) -> tuple[str, ...]:
        return BRANCHES if self.multiscale else ("mid",)

    @staticmethod
    def _hyper_masks(mlps: nn.ModuleList, tokens: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Mask logits: (B, T, C) tokens, (B, C', H, W) features -> (B, T, H, W)."""
        hyper = torch.stack([mlp(tokens[:, i]) for i, mlp in enumerate(mlps)], dim=1)  # (B, T, C')
        b, c, h, w = features.shape
        return (hyper @ features.view(b, c, h * w)).view(b, -1, h, w)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Eq. 4 with the branches of Eq. 6.

        Args:
            image_embeddings: (B, C, h, w), one per image.
            image_pe: (1, C, h, w) dense positional encoding (``prompt_encoder.get_dense_pe()``).
            sparse_prompt_embeddings: (B, T, C), one prompt set per image (T may be 0).
            dense_prompt_embeddings: (B, C, h, w).
            multimask_output: True -> SAM's 3 candidate masks, False -> its single mask.

        Returns:
            ``{"high": (B, Nm, 8h, 8w), "mid": (B, Nm, 4h, 4w), "low": (B, Nm, h, w)}`` logits (only
            ``"mid"`` when multi-scale is off) and the predicted IoU (B, Nm); Nm = 3 or 1.
        """
        b, c, h, w = image_embeddings.shape
        if sparse_prompt_embeddings.shape[0] != b or dense_prompt_embeddings.shape[0] != b:
            raise ValueError(f"one prompt set per image expected: {b} images, sparse prompts "
                             f"{tuple(sparse_prompt_embeddings.shape)}, dense {tuple(dense_prompt_embeddings.shape)}")
        seen: dict[str, object] = {}
        handles = []
        if self.multiscale:
            for name, module in (
                ("transformer", self.decoder.transformer),
                ("upscaled", self.decoder.output_upscaling),
            ):
                handles.append(module.register_forward_hook(lambda _m, _a, out, name=name: seen.__setitem__(name, out)))
        try:
            mid, iou = self.decoder.predict_masks(
                image_embeddings=image_embeddings.new_zeros(1, c, h, w),
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse_prompt_embeddings,
                dense_prompt_embeddings=image_embeddings + dense_prompt_embeddings,
            )
        finally:
            for handle in handles:
                handle.remove()
        logits = {"mid": mid}
        if self.multiscale:
            hs, src = seen["transformer"]  # tokens (B, 1 + T_mask + T, C), image (B, h*w, C)
            mask_tokens = hs[:, 1 : 1 + self.decoder.num_mask_tokens]
            low_features = src.transpose(1, 2).reshape(b, c, h, w)
            logits["low"] = self._hyper_masks(self.low_hypernetworks, mask_tokens, low_features)
            high_features = self.high_upscaling(seen["upscaled"])  # (B, C/8, 8h, 8w)
            logits["high"] = self._hyper_masks(self.high_hypernetworks, mask_tokens, high_features)
        # SAM's output selection (MaskDecoder.forward): candidates 1..3, or the single mask 0.
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return {name: logits[name][:, keep] for name in self.branches}, iou[:, keep]
