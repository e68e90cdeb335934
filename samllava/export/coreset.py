"""What the exported graph holds of a support set: its memory (capped by a coreset) and the verdict's tables.

A memory holds every patch of every support image: K * h * w rows per level, 156,800 at the offline
profile's finer level for a 200-image support. The exported file and the cost of each search grow with
it, so above :data:`MEMORY_CAP` patches a level keeps the greedy k-center coreset of its patches
(PatchCore, Roth et al. 2022): each next patch is the one farthest from those kept, so every dropped
patch lies near a kept one. Distances to a coreset are at least those to the whole memory, so a capped
export scores higher than torch; its verdict is therefore recalibrated on the same coreset (the
calibration normals scored against it, a support image never against its own patches), and keeps its
false-positive target. Below the cap the memory and the verdict are torch's own, and the export
reproduces torch's scores (``tests/export``); the cap's effect is measured by ``benchmarks/bench_export.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from samllava.coarse.memory import SUPPORT_CHUNK, level_distances, upsample
from samllava.coarse.nearest import min_cosine_distance
from samllava.coarse.stage import CoarseLocalizer
from samllava.coarse.verdict import Verdict, calibrate
from samllava.export.spec import MEMORY_CAP


@dataclass
class SupportTables:
    """The constants of one support set that an export holds."""

    memory: list[torch.Tensor]  # per level (M_l, C_l) L2-normalised patches (the coreset above the cap)
    patches: list[int]  # per level, the patches of the whole memory
    scales: torch.Tensor  # (L,) m_s
    verdict: Verdict  # thresholds on the exported scores
    held: list[torch.Tensor] | None  # leave-one-out: per level (n, h, w) held-out distances, else None
    features: list[torch.Tensor] | None  # leave-one-out: per level (n, h*w, C) the held-out images' patches
    term: torch.Tensor | None  # leave-one-out with CLIP's term: (n, S, S) that term of the held-out images

    @property
    def capped(self) -> bool:
        return any(m.shape[0] < n for m, n in zip(self.memory, self.patches))


@torch.no_grad()
def greedy_coreset(features: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (n,) of the greedy k-center coreset of L2-normalised rows (M, C) under the cosine distance:
    from row 0, each next row is the one farthest from the rows already chosen (deterministic).

    Each step is one (1, C) x (C, M) product against the rows laid out column-major (a contiguous matrix-vector
    product), keeping every row's largest similarity to the chosen rows (its smallest distance)."""
    m = features.shape[0]
    if n >= m:
        return torch.arange(m)
    columns = features.t().contiguous()  # (C, M)
    chosen = torch.empty(n, dtype=torch.long)
    nearest = torch.full((1, m), float("-inf"), dtype=features.dtype)  # largest similarity to a chosen row
    sim = torch.empty(1, m, dtype=features.dtype)
    index = 0
    for k in range(n):
        chosen[k] = index
        torch.mm(features[index:index + 1], columns, out=sim)
        torch.maximum(nearest, sim, out=nearest)
        index = int(nearest.argmin())
    return chosen


def _held_out_against(coreset: torch.Tensor, owner: torch.Tensor, features: torch.Tensor, images: torch.Tensor,
                      grid: tuple[int, int]) -> torch.Tensor:
    """(n, h, w): each held-out support image's patches (n, h*w, C) at distance ``1 - max cos`` from the coreset
    rows (M, C) of the other images (``owner`` (M,): each row's support image; ``images`` (n,): theirs)."""
    return torch.stack([min_cosine_distance(f[None], coreset[owner != i])[0].view(grid)
                        for f, i in zip(features, images.tolist())])


def _recalibrated(coarse: CoarseLocalizer, memory: list[torch.Tensor], keep: list[torch.Tensor],
                  term: torch.Tensor | None) -> tuple[Verdict, list[torch.Tensor] | None]:
    """The verdict on the coreset ``memory`` (rows ``keep`` of the whole memory), and the leave-one-out rule's
    held-out distances against it (None for calibration normals outside the support)."""
    cal = coarse.calibrator
    side, images = cal.support_side, cal.calibration_images
    held = None
    if cal.left_out_calibration:
        index = cal.calibration_index.cpu()
        held = []
        for m, full, k, d in zip(memory, cal.memory, keep, cal.held_out_grids):
            per_image = full.view(cal.support_size, -1, full.shape[-1])
            held.append(_held_out_against(m, k // per_image.shape[1], per_image[index], index, tuple(d.shape[1:])))
        s_ctx = torch.stack([upsample(d, side) / sc for d, sc in zip(held, cal.scales)]).mean(0)
    else:
        s_ctx = torch.cat([torch.stack([d / sc for d, sc in zip(level_distances(
            cal.extractor(images[i:i + SUPPORT_CHUNK]), memory, side), cal.scales)]).mean(0)
            for i in range(0, images.shape[0], SUPPORT_CHUNK)])
    decision = s_ctx if term is None else s_ctx + term
    return calibrate(decision, coarse.target_fpr, left_out=cal.left_out_calibration), held


@torch.no_grad()
def support_tables(coarse: CoarseLocalizer, text_feats: torch.Tensor | None, cap: int | None = MEMORY_CAP
                   ) -> SupportTables:
    """The tables of ``coarse``'s fitted support (on the CPU): its memory, coreset-capped at ``cap`` patches per
    level (None: never), and the verdict (torch's own when nothing is capped). ``text_feats`` (2, D): the
    category's CLIP state features where the zero-shot term is active."""
    if not coarse.has_support:
        raise ValueError("export: the model has no support set; fit one first (Diagnoser.set_support)")
    cal = coarse.calibrator
    term = None
    if coarse.zero_shot_active():  # the decision map's zero-shot term of the calibration normals
        heatmap = coarse.zero_shot(cal.calibration_images, text_feats)[0]
        term = coarse.decision_map(heatmap, torch.zeros_like(heatmap))
    memory = list(cal.memory)
    keep = [greedy_coreset(m, cap) if cap is not None and m.shape[0] > cap else torch.arange(m.shape[0])
            for m in memory]
    capped = [m[k] for m, k in zip(memory, keep)]
    if all(k.shape[0] == m.shape[0] for k, m in zip(keep, memory)):
        verdict, held = coarse.verdict(text_feats), cal.held_out_grids
    else:
        verdict, held = _recalibrated(coarse, capped, keep, term)
    features = None
    if verdict.rule == "leave-one-out":
        index = cal.calibration_index.cpu()
        features = [m.view(cal.support_size, -1, m.shape[-1])[index] for m in memory]
    else:
        held = term = None
    return SupportTables(memory=capped, patches=[m.shape[0] for m in memory], scales=cal.scales.clone(),
                         verdict=verdict, held=held, features=features, term=term)
