"""Nearest-neighbour search of query patches in a memory of support patches (cosine, bounded memory).

Every search is a sequence of matrix products over tiles of query rows and memory columns with a
running maximum (:func:`max_similarity`), so the memory used does not grow with the number of query
images or the size of the support.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_features(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """(B, C, h, w) maps -> L2-normalised patch features (B, h*w, C)."""
    return [F.normalize(m.flatten(2).transpose(1, 2), dim=-1) for m in maps]


# Similarities per tile: TILE_COLUMNS memory patches by as many query rows as make TILE similarities (4 MB,
# one buffer allocated once per call), the maximum kept running across the column tiles. A tile that fits in
# the caches is written and read back there; rows-only blocks of the whole memory send every similarity out
# to main memory and back, and the products over a 40-channel level are bound by that traffic.
TILE = 2**20
TILE_COLUMNS = 4096


def max_similarity(query: torch.Tensor, memory_t: torch.Tensor, *, own: tuple[int, int] | None = None,
                   near: torch.Tensor | None = None, tile: int = TILE, buffer: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Each query row's largest dot product with the memory's columns, tile by tile (bounded memory).

    Args:
        query: (R, C).
        memory_t: (C, M), the memory transposed.
        own: columns [a, b) no row may match (a held-out image's own patches).
        near: (R, M) bool, True where a row may not match a column (K = 1: the patch's grid neighbours).
        tile: similarities per tile (at most TILE_COLUMNS columns wide).
        buffer: a float tensor of at least ``max(tile, TILE_COLUMNS)`` elements to write the tiles into,
            for a caller that calls many times (allocated here when None).

    Returns:
        (R,); -inf for a row that may match nothing.
    """
    r, m = query.shape[0], memory_t.shape[1]
    cols = min(m, TILE_COLUMNS)
    rows = max(1, min(r, tile // max(1, cols)))
    flat = query.new_empty(rows * cols) if buffer is None else buffer  # each tile a contiguous view (mm's out=)
    part = query.new_empty(rows)
    best = query.new_full((r,), float("-inf"))
    for j in range(0, m, cols):
        jj = min(m, j + cols)
        if own is not None and own[0] <= j and jj <= own[1]:
            continue  # the whole tile is excluded
        mem = memory_t[:, j:jj]
        for i in range(0, r, rows):
            ii = min(r, i + rows)
            sim = torch.mm(query[i:ii], mem, out=flat[:(ii - i) * (jj - j)].view(ii - i, jj - j))
            if own is not None and max(own[0], j) < min(own[1], jj):
                sim[:, max(own[0], j) - j:min(own[1], jj) - j] = float("-inf")
            if near is not None:
                sim.masked_fill_(near[i:ii, j:jj], float("-inf"))
            torch.amax(sim, dim=-1, out=part[:ii - i])
            torch.maximum(best[i:ii], part[:ii - i], out=best[i:ii])
    return best


def min_cosine_distance(query: torch.Tensor, memory: torch.Tensor, tile: int = TILE) -> torch.Tensor:
    """``1 - max cos`` of each query patch to the memory, as matrix products over tiles of query patches
    and memory patches (:func:`max_similarity`: bounded memory whatever B, N and M).

    Every tile is written into one buffer allocated once: allocating and freeing a block of megabytes
    per step made glibc's heap grow by gigabytes over a large support (docs/decisions.md).

    Args:
        query: (B, N, C) L2-normalised.
        memory: (M, C) L2-normalised.

    Returns:
        (B, N) distances in [0, 2].
    """
    best = max_similarity(query.reshape(-1, query.shape[-1]), memory.t(), tile=tile)
    return (1 - best.view(query.shape[:-1])).clamp_min(0)  # clamp: rounding can give -1e-7


def held_out_distances(memory: torch.Tensor, grid: tuple[int, int], exclusion_radius: int = 1,
                       queries: torch.Tensor | None = None, tile: int = TILE) -> torch.Tensor:
    """(Q, h, w): each patch of the support images ``queries`` (default all K), at distance ``1 - max cos``
    from the support patches it may not match (other images for K > 1; outside its grid neighbourhood
    for K = 1): how far a *normal* patch lies from the memory, the reference for m_s and for the verdict.

    The (Q*h*w, K*h*w) similarities are computed in tiles (:func:`max_similarity`) of one query image's
    rows at a time, so that image's own columns are one slice to exclude, into one buffer allocated once:
    bounded memory and no mask the size of the tile.

    Args:
        memory: (K, h*w, C) L2-normalised support features of one level.
        grid: (h, w) of the level.
        queries: (Q,) indices of the held-out images.
    """
    k, n, _ = memory.shape
    h, w = grid
    queries = torch.arange(k) if queries is None else queries
    feats_t = memory.reshape(k * n, -1).t()
    near = None
    if k == 1:  # leave the patch's (2r+1)x(2r+1) grid neighbourhood out: (n, n), once
        idx = torch.arange(n, device=memory.device)
        near = torch.maximum(((idx // w)[:, None] - (idx // w)[None, :]).abs(),
                             ((idx % w)[:, None] - (idx % w)[None, :]).abs()) <= exclusion_radius
        if bool(near.all(1).any()):
            raise ValueError(f"K=1 normal scale: a {h}x{w} grid leaves no patch outside radius {exclusion_radius}; "
                             "use a smaller exclusion_radius or a finer level")
    buffer = memory.new_empty(max(tile, TILE_COLUMNS))  # a tile is at most this big (one row when tile < columns)
    best = torch.stack([max_similarity(memory[q], feats_t, own=None if near is not None else (q * n, (q + 1) * n),
                                       near=near, tile=tile, buffer=buffer) for q in queries.tolist()])
    return (1 - best).clamp_min(0).view(-1, h, w)
