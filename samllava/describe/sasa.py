"""Segmentation-Aware Semantic Alignment (SASA), Sec. 3.3, Eq. 7-8.

SASA grounds the language model in the fine mask: SAM image features are multiplied by M_fine,
pooled to a g x g grid of visual tokens V, projected with the CLIP text embeddings T into a common
space d_a (V_0, T_0), and aligned by layers of bidirectional cross-attention:

* vision -> text (Eq. 7): ``V' = CrossAttention(Q=V_0, K=T_0, V=T_0)``
* text -> vision (Eq. 8): ``T' = CrossAttention(Q=T_0, K=V', V=V')`` (attending to the *updated* V').

Cell words: the visual token of each cell holding part of M_fine also gets the language model's own
embedding of that cell's position word ("top left", ...; learnable, initialised by
:meth:`Sasa.set_cell_words`): a spatial prior in the words the model already reads. It belongs to the
visual tokens, not to the attention, so the "w/o SASA" ablation keeps it.

Eq. 8's keys are only the cells that hold part of M_fine, plus one learned "no defect" slot that is
always there (an empty mask attends to it alone). Attending to all g*g cells, as a literal reading
has it, lets a defect inside one of 16 cells move T' by about 1/16 of its feature, and an empty mask
differs from a small defect in one token only: the language model then sees almost the same
sequence for normal and defective images (at chance: docs/decisions.md). The "w/o SASA"
ablation is unaffected (no attention at all).

The paper gives neither the residual nor the normalisation; we follow segment_anything's
``TwoWayAttentionBlock`` (``x = norm(x + attn(q=x, k=y, v=y))``), without its MLP and self-attention
since the paper calls SASA a lightweight cross-attention module. V' and T' are projected to the
language model's width and concatenated into X_llava = [V'; T'], (B, g*g + N_t, llm_dim).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samllava.core.config import SasaConfig
from samllava.data.instructions import position_on_grid


@dataclass
class SasaOutput:
    tokens: Tensor  # (B, g*g + N_t, llm_dim): X_llava = [V'; T'] in the LLM embedding space
    attn: list[dict[str, Tensor]] = field(default_factory=list)  # per layer {"v2t": (B,g*g,N_t), "t2v": (B,N_t,g*g)}


class BidirectionalCrossAttentionLayer(nn.Module):
    """One SASA layer: Eq. 7 then Eq. 8, each with a residual connection and a LayerNorm."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.v2t = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_v = nn.LayerNorm(dim)
        self.t2v = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_t = nn.LayerNorm(dim)

    def forward(self, v: Tensor, t: Tensor, present: Tensor, null: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """v: (B, N_v, d_a) visual tokens, t: (B, N_t, d_a) text tokens -> updated v, t, head-averaged maps.

        ``present`` (B, N_v) bool and ``null`` (1, 1, d_a): Eq. 8 attends only to the present cells and
        the null slot; the returned "t2v" map keeps the N_v cell columns (rows then sum to 1 minus the
        weight on the null slot).
        """
        v, w_v2t = self.vision_to_text(v, t)
        t, w_t2v = self.text_to_vision(t, v, present, null)
        return v, t, {"v2t": w_v2t, "t2v": w_t2v}

    def vision_to_text(self, v: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 7: ``V' = norm(V_0 + CrossAttention(Q=V_0, K=T_0, V=T_0))``; (B, N_v, d_a) and weights (B, N_v, N_t)."""
        out, w = self.v2t(v, t, t, need_weights=True)
        return self.norm_v(v + out), w

    def text_to_vision(self, t: Tensor, v: Tensor, present: Tensor, null: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 8: ``T' = norm(T_0 + CrossAttention(Q=T_0, K=V', V=V'))`` over the cells holding the mask and
        the null slot; (B, N_t, d_a) and the weights on the N_v cells (B, N_t, N_v)."""
        keys = torch.cat([v, null.to(v.dtype).expand(v.shape[0], 1, -1)], dim=1)  # (B, N_v + 1, d_a)
        ignore = torch.cat([~present, present.new_zeros(present.shape[0], 1)], dim=1)  # the null slot is always kept
        out, w = self.t2v(t, keys, keys, key_padding_mask=ignore, need_weights=True)
        return self.norm_t(t + out), w[..., :-1]


class Sasa(nn.Module):
    """Segmentation-Aware Semantic Alignment (Sec. 3.3, Eq. 7-8).

    Args:
        cfg: align_dim d_a, num_heads, num_layers, grid g, enabled (False = Table 9 "w/o SASA":
            the projected V_0 and T_0 are concatenated without any attention).
        vis_dim: channels C of the SAM image features.
        text_dim: width D_t of the CLIP text embeddings.
        llm_dim: embedding width of LLaVA's language model.
    """

    def __init__(self, cfg: SasaConfig, vis_dim: int, text_dim: int, llm_dim: int) -> None:
        super().__init__()
        if cfg.align_dim % cfg.num_heads:
            raise ValueError(f"sasa.align_dim={cfg.align_dim} is not divisible by sasa.num_heads={cfg.num_heads}")
        if cfg.grid < 1 or cfg.num_layers < 0:
            raise ValueError(
                f"sasa.grid must be >= 1 and sasa.num_layers >= 0, got grid={cfg.grid}, num_layers={cfg.num_layers}"
            )
        self.cfg = cfg
        self.vis_dim, self.text_dim, self.llm_dim = vis_dim, text_dim, llm_dim
        self.proj_v = nn.Linear(vis_dim, cfg.align_dim)  # V -> V_0
        self.proj_t = nn.Linear(text_dim, cfg.align_dim)  # T -> T_0
        self.layers = nn.ModuleList(
            BidirectionalCrossAttentionLayer(cfg.align_dim, cfg.num_heads)
            for _ in range(cfg.num_layers if cfg.enabled else 0)
        )
        # the "no defect" key/value of Eq. 8 (the text attends to the mask's cells and this slot)
        self.null = nn.Parameter(0.02 * torch.randn(1, 1, cfg.align_dim)) if self.layers else None
        self.out_v = nn.Linear(cfg.align_dim, llm_dim)  # V' -> LLaVA embedding space
        # (g*g, llm_dim) word embeddings of the cells' positions, filled by set_cell_words
        self.cell_words = nn.Parameter(torch.zeros(cfg.grid**2, llm_dim))
        self.out_t = nn.Linear(cfg.align_dim, llm_dim)  # T' -> LLaVA embedding space

    def cell_position_names(self) -> list[str]:
        """The 3x3 grid word of each of the g*g cells (row-major), by the cell's centre, as the data names
        a mask's position (:func:`samllava.data.instructions.position_on_grid`)."""
        g = self.cfg.grid
        # on the CPU whatever the default device (build_model may run under torch.device("cuda")): numpy reads it
        one_hot = torch.eye(g * g, device="cpu").reshape(g * g, g, g)  # cell i alone, as a g x g mask
        return [position_on_grid(m) for m in one_hot]

    @torch.no_grad()
    def set_cell_words(self, embeddings: Tensor) -> None:
        """Initialise ``cell_words`` with (g*g, llm_dim) embeddings of :meth:`cell_position_names`."""
        if tuple(embeddings.shape) != tuple(self.cell_words.shape):
            raise ValueError(
                f"cell word embeddings must be {tuple(self.cell_words.shape)}, got {tuple(embeddings.shape)}"
            )
        self.cell_words.copy_(embeddings)

    def num_tokens(self, n_text: int) -> int:
        """Length of X_llava for ``n_text`` text embeddings: g*g + N_t."""
        return self.cfg.grid**2 + n_text

    def visual_tokens(self, features: Tensor, mask: Tensor) -> Tensor:
        """Mask-grounded visual tokens V: (B, C, h, w) features, (B, H, W) mask -> (B, g*g, C).

        The mask (0/1 or soft, any size) is area-resized to h x w and multiplied into the
        features (the paper's V); each of the g x g cells then holds the *mean feature inside the
        mask* (sum of F*M over the cell / sum of M), and 0 where the cell holds no mask. A plain
        average over the cell would shrink a defect covering 1 % of it to 1 % of its feature
        magnitude, hiding small defects from the language model. An empty mask gives V = 0.
        """
        return self._cells(features, mask)[0]

    def present_cells(self, features: Tensor, mask: Tensor) -> Tensor:
        """(B, g*g) bool: the cells that hold part of the mask (those with a non-zero V)."""
        return self._cells(features, mask)[1] > 0

    def _cells(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """V (B, g*g, C) and the mask fraction of each cell (B, g*g), from one pooling pass."""
        if features.ndim != 4 or features.shape[1] != self.vis_dim:
            raise ValueError(f"SASA features must be (B, {self.vis_dim}, h, w), got {tuple(features.shape)}")
        if mask.ndim != 3 or mask.shape[0] != features.shape[0]:
            raise ValueError(f"SASA mask must be (B={features.shape[0]}, H, W), got {tuple(mask.shape)}")
        m = F.interpolate(mask[:, None].to(features.dtype), size=features.shape[-2:], mode="area")  # (B, 1, h, w)
        num = F.adaptive_avg_pool2d(features * m, self.cfg.grid)  # (B, C, g, g)
        den = F.adaptive_avg_pool2d(m, self.cfg.grid)  # (B, 1, g, g): mask fraction of each cell
        v = num / den.clamp_min(1e-6) * (den > 0)
        return v.flatten(2).transpose(1, 2), den.flatten(1)

    def forward(self, features: Tensor, mask: Tensor, text: Tensor) -> SasaOutput:
        """X_llava from SAM features (B, C, h, w), M_fine (B, H, W) and CLIP text (B or 1, N_t, D_t)."""
        if text.ndim != 3 or text.shape[-1] != self.text_dim or text.shape[0] not in (1, features.shape[0]):
            raise ValueError(
                f"SASA text must be (B={features.shape[0]} or 1, N_t, {self.text_dim}), got {tuple(text.shape)}"
            )
        v, cover = self._cells(features, mask)
        present = cover > 0  # (B, g*g): the cells holding M_fine, Eq. 8's keys
        v = self.proj_v(v)  # V_0: (B, g*g, d_a)
        t = self.proj_t(text.to(v.dtype)).expand(v.shape[0], -1, -1)  # T_0: (B, N_t, d_a)
        attn = []
        for layer in self.layers:  # empty when cfg.enabled is False: plain concatenation
            v, t, maps = layer(v, t, present, self.null)
            attn.append(maps)
        v = self.out_v(v)
        v = v + present.to(v.dtype)[..., None] * self.cell_words.to(v.dtype)  # each held cell's position word
        tokens = torch.cat([v, self.out_t(t)], dim=1)  # (B, g*g + N_t, llm_dim)
        return SasaOutput(tokens=tokens, attn=attn)
