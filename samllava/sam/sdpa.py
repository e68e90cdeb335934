"""SAM's image-encoder attention through ``torch.nn.functional.scaled_dot_product_attention``.

segment_anything's ``image_encoder.Attention`` materialises the whole attention matrix
(B * heads, N, N) in ``q @ k^T``, adds the decomposed relative positions to it (a second copy)
and softmaxes it (a third): at 1024 px a global layer of ViT-H has N = 4096 tokens and 16 heads,
1 GiB per image in float32, so a batch of 32 does not fit on an 80 GB card.

:func:`use_sdpa` makes every such module compute the same function with SDPA. The relative
positions (``add_decomposed_rel_pos``: ``rel_h`` and ``rel_w``, einsums of the query with the
tables of ``get_rel_pos``) become an additive float ``attn_mask``; it is still (B, heads, N, N),
but it is built from the two small terms by broadcasting, never from ``q @ k^T``, and the fused
kernels (memory-efficient attention on CUDA) neither keep the scores nor the probabilities.
Parameters and buffers are untouched: state dicts and official checkpoints are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn


def rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                 hw: tuple[int, int]) -> torch.Tensor:
    """The decomposed relative-position term of ``add_decomposed_rel_pos`` as an additive mask.

    Args:
        q: (B, heads, h * w, C) queries (unscaled, as segment_anything passes them).
        rel_pos_h: (Lh, C) height table; rel_pos_w: (Lw, C) width table.
        hw: the token grid (h, w); queries and keys share it (self-attention).

    Returns:
        (B, heads, h * w, h * w) bias, ``bias[..., (qh, qw), (kh, kw)] = rel_h[qh, qw, kh] + rel_w[qh, qw, kw]``,
        in q's dtype (SDPA wants a float mask of the query's dtype).
    """
    b, heads, n, c = q.shape
    h, w = hw
    r_q = q.reshape(b * heads, h, w, c)
    # get_rel_pos indexes the tables with an arange made on the default device: make it where the tables are
    # (a CPU index into a GPU table costs a copy per call; a meta one into a CPU table reads garbage, silently)
    with torch.device(rel_pos_h.device):
        table_h, table_w = get_rel_pos(h, h, rel_pos_h), get_rel_pos(w, w, rel_pos_w)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, table_h)  # (B * heads, h, w, h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, table_w)  # (B * heads, h, w, w)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]  # (B * heads, h, w, h, w), by broadcasting
    return bias.reshape(b, heads, n, n).to(q.dtype)


class SdpaAttention(Attention):
    """``segment_anything``'s image-encoder ``Attention`` with the same parameters, computed by SDPA.

    Not constructed directly: :func:`use_sdpa` switches existing modules to this class.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) tokens of one window (or the whole grid) -> (B, H, W, dim)."""
        b, h, w, _ = x.shape
        # (3, B, heads, H * W, C), the layout of segment_anything's forward without folding heads into B
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        mask = rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w)) if self.use_rel_pos else None
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)  # (B, heads, H * W, C)
        x = x.transpose(1, 2).reshape(b, h, w, -1)  # heads next to channels, as the original's permute
        return self.proj(x)


def use_sdpa(sam_or_encoder: nn.Module) -> int:
    """Switch, in place, every image-encoder ``Attention`` under ``sam_or_encoder`` to SDPA.

    The modules keep their parameters, buffers and names (only their class, hence their forward,
    changes), so ``state_dict()`` and checkpoint loading are as before. Idempotent.

    Returns:
        The number of attention modules that now use SDPA (one per encoder block).
    """
    modules = [m for m in sam_or_encoder.modules() if isinstance(m, Attention)]
    for m in modules:
        m.__class__ = SdpaAttention  # a subclass: isinstance(m, Attention) still holds
    return len(modules)
