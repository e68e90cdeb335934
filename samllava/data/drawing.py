"""Drawing synthetic defect images: procedural surfaces and defects painted with hard edges.

Each category is a procedurally drawn surface (a texture, or an object on a dark background) drawn with
vectorised numpy; a defect (crack, hole, stain, scratch, contamination; from 1-px micro-scratches to
large stains) is painted on top with hard edges, so its ground-truth mask is exactly the set of
changed pixels, and its attributes (position on the 3x3 grid, relative size, shape, colour) are read
off what was drawn. :func:`render` draws one image; :mod:`samllava.data.synthetic` writes data sets.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy import ndimage

from samllava.data.dataset import GOOD
from samllava.data.instructions import NO_POSITION, position_on_grid, size_label

REF_SIDE = 256.0  # geometry below is given in pixels of a 256-px image and scaled with the side

DEFECT_TYPES: tuple[str, ...] = ("crack", "hole", "stain", "scratch", "contamination")
# Intended size classes per defect type, cycled through; the size *label* comes from the drawn mask.
DEFECT_SIZE_CLASSES: dict[str, tuple[str, ...]] = {
    "crack": ("small", "medium", "large"),
    "hole": ("tiny", "small", "medium"),
    "stain": ("small", "medium", "large"),
    "scratch": ("micro", "small", "medium"),
    "contamination": ("tiny", "small", "medium"),
}
# Relative size label from the mask's area fraction (upper bounds).
COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.06, 0.06, 0.06), "dark brown": (0.28, 0.16, 0.07), "rust orange": (0.78, 0.38, 0.10),
    "yellow": (0.92, 0.82, 0.25), "white": (0.97, 0.97, 0.95), "red": (0.82, 0.12, 0.12),
    "blue": (0.12, 0.28, 0.85), "green": (0.12, 0.58, 0.22),
}
DEFECT_COLOURS: dict[str, tuple[str, ...]] = {
    "crack": ("black", "dark brown"), "hole": ("black",), "scratch": ("white", "black"),
    "stain": ("dark brown", "rust orange", "yellow", "black"),
    "contamination": ("blue", "green", "red", "black", "white"),
}
# A defect colour must differ from the surface under it by this RGB distance (visibility, not tuned).
MIN_CONTRAST = 0.4


@dataclass(frozen=True)
class SyntheticCategory:
    """One synthetic category: a surface painter, its colours and the defects drawn on it."""

    name: str  # folder name
    surface: str  # key of SURFACES: weave | grain | brushed | granular | cap | tablet
    kind: str  # "texture" or "object"
    subject: str  # noun phrase for descriptions, e.g. "a woven grey fabric"
    colours: tuple[tuple[float, float, float], ...]  # surface palette (RGB in [0, 1]); meaning per painter
    scale: float = 1.0  # pattern scale (period multiplier)
    defects: tuple[str, ...] = DEFECT_TYPES
    avoid_colours: tuple[str, ...] = ()  # defect colours not used (they occur on the normal surface)
    stands_in_for: str | None = None  # the TADD subset this category stands in for (synthetic, labelled as such)


class Surface(NamedTuple):
    rgb: np.ndarray  # (H, W, 3) float in [0, 1]
    region: np.ndarray  # (H, W) bool: where a defect may be centred
    body: np.ndarray  # (H, W) bool: where a defect may extend (the object; everything for textures)


class Rendered(NamedTuple):
    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    mask: np.ndarray | None  # (H, W) bool, exactly the pixels the defect changed; None: image labels only
    attrs: dict[str, str]  # defect_type, position, size, shape, colour ("good"/"none" for normal images)


# ----------------------------------------------------------------------------- surfaces

def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


@functools.lru_cache(maxsize=64)
def _bspline_matrix(n: int, scale: float) -> np.ndarray | None:
    """``(n, m)`` weights of a cubic B-spline through ``m`` knots spaced ``scale`` px (None: no smoothing)."""
    if scale <= 1:
        return None
    m = int(np.ceil(n / scale)) + 4
    t = np.abs(np.arange(n, dtype=np.float32)[:, None] / scale - np.arange(m, dtype=np.float32)[None, :] + 2)
    return np.where(t < 1, 2 / 3 - t**2 + t**3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float, scale_x: float | None = None) -> np.ndarray:
    """Zero-mean, unit-std noise with features about ``scale`` px (``scale_x`` across, default the same).

    A cubic B-spline of random knot values: small matrix products, no filtering of the full image.
    """
    ry, rx = _bspline_matrix(h, scale), _bspline_matrix(w, scale if scale_x is None else scale_x)
    noise = rng.standard_normal((h if ry is None else ry.shape[1], w if rx is None else rx.shape[1])).astype(np.float32)
    if ry is not None:
        noise = ry @ noise
    if rx is not None:
        noise = noise @ rx.T
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _lerp(a: Sequence[float], b: Sequence[float], t: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a + (b - a) * t[..., None]


def _everywhere(h: int, w: int) -> np.ndarray:
    return np.ones((h, w), bool)


def _weave(rng: np.random.Generator, h: int, w: int, cat: SyntheticCategory, s: float) -> Surface:
    """Plain-weave fabric: alternating warp/weft thread bumps, per-thread tint, fine fibre noise."""
    p = 8.0 * cat.scale * s
    y, x = _grid(h, w)
    u, v = (x + rng.uniform(0, p)) / p, (y + rng.uniform(0, p)) / p
    iu, iv = np.floor(u).astype(int), np.floor(v).astype(int)
    warp_over = (iu + iv) % 2 == 0  # which thread lies on top in this cell
    height = np.where(warp_over, np.sin(np.pi * (u - iu)), np.sin(np.pi * (v - iv))) ** 0.7
    tint_u = 1 + 0.05 * rng.standard_normal(iu.max() + 1).astype(np.float32)
    tint_v = 1 + 0.05 * rng.standard_normal(iv.max() + 1).astype(np.float32)
    tint = np.where(warp_over, tint_u[iu], tint_v[iv])
    value = np.clip((0.35 + 0.65 * height) * tint + 0.03 * rng.standard_normal((h, w)), 0, 1)
    return Surface(_lerp(cat.colours[1], cat.colours[0], value), _everywhere(h, w), _everywhere(h, w))


def _grain(rng: np.random.Generator, h: int, w: int, cat: SyntheticCategory, s: float) -> Surface:
    """Wood: growth lines bent by low-frequency noise, fine fibres along the grain."""
    y, x = _grid(h, w)
    angle = rng.uniform(-0.08, 0.08)
    warp = 0.35 * _smooth_noise(rng, h, w, 64 * s, 96 * s) + 0.06 * _smooth_noise(rng, h, w, 8 * s, 24 * s)
    t = (y * np.cos(angle) - x * np.sin(angle)) / (22 * cat.scale * s) + warp + rng.uniform(0, 1)
    rings = (0.5 + 0.5 * np.sin(2 * np.pi * t)) ** 3
    fibres = _smooth_noise(rng, h, w, 1.0, 10 * s)  # streaks along the grain
    value = np.clip(0.6 * rings + 0.08 * fibres + 0.1, 0, 1)
    return Surface(_lerp(cat.colours[0], cat.colours[1], value), _everywhere(h, w), _everywhere(h, w))


def _brushed(rng: np.random.Generator, h: int, w: int, cat: SyntheticCategory, s: float) -> Surface:
    """Brushed metal: long horizontal streaks and a soft illumination gradient."""
    y, x = _grid(h, w)
    streaks = _smooth_noise(rng, h, w, 1.0, 30 * s * cat.scale)  # long horizontal brushing marks
    theta = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(theta) * x / w + np.sin(theta) * y / h) - 0.5 * (np.cos(theta) + np.sin(theta))
    value = 1 + 0.06 * streaks + 0.12 * gradient + 0.015 * rng.standard_normal((h, w))
    return Surface(
        np.clip(np.asarray(cat.colours[0], np.float32) * value[..., None], 0, 1), _everywhere(h, w), _everywhere(h, w)
    )


def _granular(rng: np.random.Generator, h: int, w: int, cat: SyntheticCategory, s: float) -> Surface:
    """Concrete: multi-scale mottling plus grey aggregate grains."""
    k = cat.scale * s
    mottle = 0.06 * _smooth_noise(rng, h, w, 32 * k) + 0.04 * _smooth_noise(rng, h, w, 8 * k)
    grains = _smooth_noise(rng, h, w, 3 * k)
    value = 1 + mottle + 0.035 * rng.standard_normal((h, w)) - 0.14 * (grains > 1.6) + 0.08 * (grains < -1.7)
    return Surface(
        np.clip(np.asarray(cat.colours[0], np.float32) * value[..., None], 0, 1), _everywhere(h, w), _everywhere(h, w)
    )


def _background(rng: np.random.Generator, h: int, w: int, colour: Sequence[float], s: float) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) * (1 + 0.08 * _smooth_noise(rng, h, w, 16 * s))[..., None], 0, 1)


def _cap(rng: np.random.Generator, h: int, w: int, cat: SyntheticCategory, s: float) -> Surface:
    """Bottle cap seen from above: shaded disc, knurled rim, an inner groove, dark background."""
    y, x = _grid(h, w)
    cy, cx = h / 2 + rng.uniform(-0.03, 0.03) * h, w / 2 + rng.uniform(-0.03, 0.03) * w
    radius = 0.36 * min(h, w) * rng.uniform(0.98, 1.02)
    r = np.hypot(y - cy, x - cx) / radius
    angle = np.arctan2(y - cy, x - cx) + rng.uniform(0, 2 * np.pi)
    highlight = np.exp(-((x - cx + 0.3 * radius) ** 2 + (y - cy + 0.3 * radius) ** 2) / (2 * (0.25 * radius) ** 2))
    shade = 1 - 0.25 * r**2 + 0.15 * highlight
    shade = shade * np.where(r > 0.86, 0.85 + 0.15 * np.cos(48 * angle), 1.0)
    shade = shade * np.where(np.abs(r - 0.62) * radius < 1.2 * s, 0.7, 1.0)
    body = r <= 1
    rgb = np.where(body[..., None], np.clip(np.asarray(cat.colours[0], np.float32) * shade[..., None], 0, 1),
                   _background(rng, h, w, cat.colours[1], s))
    return Surface(rgb, r < 0.8, body)


def _tablet(rng: np.random.Generator, h: int, w: int, cat: SyntheticCategory, s: float) -> Surface:
    """Oblong pill with a score line and red speckles (as MVTec's pill), dark background."""
    y, x = _grid(h, w)
    cy, cx = h / 2 + rng.uniform(-0.03, 0.03) * h, w / 2 + rng.uniform(-0.03, 0.03) * w
    a, b = 0.40 * w * rng.uniform(0.98, 1.02), 0.23 * h * rng.uniform(0.98, 1.02)
    e = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2
    body = e <= 1
    dots = np.zeros((h, w), bool)
    n = rng.poisson(30)
    dy, dx = rng.uniform(-0.8, 0.8, (2, n))
    inside = dy**2 + dx**2 <= 0.64
    dots[np.clip((cy + dy[inside] * b).astype(int), 0, h - 1), np.clip((cx + dx[inside] * a).astype(int), 0, w - 1)] = (
        True
    )
    speckles = ndimage.distance_transform_edt(~dots) <= 1.3 * s if dots.any() else dots  # discs around the dots
    shade = (1 - 0.15 * e) * np.where((np.abs(x - cx) < 0.8 * s) & (e < 0.85), 0.85, 1.0)
    pill = np.asarray(cat.colours[0], np.float32) * shade[..., None]
    pill = np.where(speckles[..., None], np.asarray(cat.colours[1], np.float32), pill)
    rgb = np.where(body[..., None], np.clip(pill, 0, 1), _background(rng, h, w, cat.colours[2], s))
    return Surface(rgb, e <= 0.8, body)


SURFACES: dict[str, Callable[..., Surface]] = {
    "weave": _weave, "grain": _grain, "brushed": _brushed, "granular": _granular, "cap": _cap, "tablet": _tablet,
}


# ----------------------------------------------------------------------------- defects

def _polyline_mask(points: np.ndarray, width: float, h: int, w: int) -> np.ndarray:
    """Pixels within ``width / 2`` (at least 0.5 px) of a polyline ``(N, 2)`` of (row, col) points.

    Loops over segments (a few dozen), never pixels: each step is a vectorised distance on the
    polyline's bounding box.
    """
    half = max(width / 2, 0.5)
    lo = np.floor(points.min(0) - half - 1).astype(int).clip(0, [h - 1, w - 1])
    hi = np.ceil(points.max(0) + half + 2).astype(int).clip(1, [h, w])
    mask = np.zeros((h, w), bool)
    if (hi <= lo).any():
        return mask
    yy, xx = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]].astype(np.float32)
    best = np.full(yy.shape, np.inf, np.float32)
    for p, q in zip(points[:-1], points[1:]):
        d = q - p
        t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
        best = np.minimum(best, np.hypot(yy - p[0] - t * d[0], xx - p[1] - t * d[1]))
    mask[lo[0]:hi[0], lo[1]:hi[1]] = best <= half
    return mask


def _walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, steps: int, jitter: float
) -> np.ndarray:
    headings = heading + np.cumsum(rng.normal(0, jitter, steps))
    moves = (length / steps) * np.stack([np.sin(headings), np.cos(headings)], 1)
    return np.vstack([start, start + np.cumsum(moves, 0)])


def _crack(rng, c, h, w, s, size):
    length, width, branches = {"small": (0.16, 1.7, 0), "medium": (0.32, 2.3, 1), "large": (0.55, 3.0, 2)}[size]
    side = min(h, w)
    heading = rng.uniform(0, 2 * np.pi)
    half = length * side * rng.uniform(0.8, 1.2) / 2
    trunk = np.vstack([_walk(rng, c, heading + np.pi, half, 8, 0.45)[::-1], _walk(rng, c, heading, half, 8, 0.45)[1:]])
    mask = _polyline_mask(trunk, width * s, h, w)
    for _ in range(branches):
        start = trunk[rng.integers(len(trunk))]
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
        mask |= _polyline_mask(_walk(rng, start, heading + turn, half * 0.6, 6, 0.45), 0.7 * width * s, h, w)
    return mask, "jagged branching line" if branches else "jagged line"


def _scratch(rng, c, h, w, s, size):
    (l0, l1), width = {"micro": ((0.05, 0.10), 1.0), "small": ((0.15, 0.28), 1.8), "medium": ((0.3, 0.55), 3.0)}[size]
    length = rng.uniform(l0, l1) * min(h, w)
    heading, bend = rng.uniform(0, np.pi), rng.uniform(-0.15, 0.15)
    t = np.linspace(-0.5, 0.5, 16)[:, None]
    along, across = np.array([np.sin(heading), np.cos(heading)]), np.array([np.cos(heading), -np.sin(heading)])
    points = c + t * length * along + bend * (t**2 - 1 / 12) * length * across
    return _polyline_mask(points, max(1.0, width * s), h, w), "thin curved line" if abs(
        bend
    ) > 0.06 else "thin straight line"


def _ellipse(c: np.ndarray, ry: float, rx: float, angle: float, h: int, w: int) -> np.ndarray:
    """Normalised elliptic radius around ``c`` (<= 1 inside)."""
    y, x = _grid(h, w)
    dy, dx = y - c[0], x - c[1]
    u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
    return np.sqrt((u / rx) ** 2 + (v / ry) ** 2)


def _hole(rng, c, h, w, s, size):
    radius = {"tiny": rng.uniform(2.0, 3.0) * s, "small": rng.uniform(0.02, 0.035) * min(h, w),
              "medium": rng.uniform(0.05, 0.08) * min(h, w)}[size]
    aspect = rng.uniform(1.0, 1.6)
    return _ellipse(
        c, radius, radius * aspect, rng.uniform(0, np.pi), h, w
    ) <= 1, "round spot" if aspect < 1.2 else "oval spot"


def _stain(rng, c, h, w, s, size):
    r0, r1 = {"small": (0.03, 0.05), "medium": (0.07, 0.11), "large": (0.15, 0.22)}[size]
    radius = rng.uniform(r0, r1) * min(h, w)
    d = _ellipse(c, radius, radius * rng.uniform(1.0, 1.5), rng.uniform(0, np.pi), h, w)
    # The core (d <= 0.3) always belongs to the stain, so the noisy edge can never empty it.
    return (d + 0.3 * _smooth_noise(rng, h, w, max(2.0, radius / 2)) < 1) | (d <= 0.3), "irregular blob"


def _contamination(rng, c, h, w, s, size):
    (n0, n1), (r0, r1), spread = {"tiny": ((1, 3), (1.0, 1.6), 0.02), "small": ((4, 8), (1.5, 2.5), 0.05),
                                  "medium": ((8, 15), (2.0, 3.5), 0.09)}[size]
    n = int(rng.integers(n0, n1 + 1))
    centres = np.vstack([c, c + rng.normal(0, spread * min(h, w), (n - 1, 2))])
    radii = rng.uniform(r0, r1, n) * s
    y, x = _grid(h, w)
    mask = np.zeros((h, w), bool)
    for (py, px), r in zip(centres, radii):  # a handful of specks, each a vectorised disc
        mask |= (y - py) ** 2 + (x - px) ** 2 <= max(r, 0.5) ** 2
    return mask, "single speck" if n == 1 else "cluster of small specks"


DEFECTS: dict[str, Callable[..., tuple[np.ndarray, str]]] = {
    "crack": _crack, "hole": _hole, "stain": _stain, "scratch": _scratch, "contamination": _contamination,
}


def _paint(rng: np.random.Generator, surface: np.ndarray, mask: np.ndarray, defect: str,
           cat: SyntheticCategory) -> tuple[np.ndarray, str]:
    """Paint ``mask`` with a colour that contrasts with the surface under it; returns image and colour name."""
    under = surface[mask].mean(0)
    names = [n for n in DEFECT_COLOURS[defect] if n not in cat.avoid_colours] or list(DEFECT_COLOURS[defect])
    dist = np.array([np.linalg.norm(np.asarray(COLOURS[n]) - under) for n in names])
    visible = [n for n, d in zip(names, dist) if d >= MIN_CONTRAST] or [names[int(dist.argmax())]]
    colour = visible[int(rng.integers(len(visible)))]
    paint = np.broadcast_to(np.asarray(COLOURS[colour], np.float32), surface.shape).copy()
    alpha = np.ones(mask.shape, np.float32)
    if defect == "hole":  # darker towards the middle: depth
        dist_in = ndimage.distance_transform_edt(mask)
        paint *= (1.3 - 0.3 * dist_in / max(dist_in.max(), 1))[..., None]
    elif defect == "stain":  # translucent and uneven: the surface shows through
        alpha = 0.8 + 0.15 * np.clip(_smooth_noise(rng, *mask.shape, 8.0), -1, 1)
    out = surface.copy()
    a = alpha[mask][:, None]
    out[mask] = np.clip(surface[mask] * (1 - a) + paint[mask] * a, 0, 1)
    return out, colour


def render(cat: SyntheticCategory, rng: np.random.Generator, shape: tuple[int, int],
           defect: str | None = None, size_class: str | None = None) -> Rendered:
    """Draw one image: the surface, then (optionally) one defect on it.

    Args:
        cat: the category.
        rng: its random generator (the surface is drawn first, so the same rng state gives the same
            surface with or without a defect).
        shape: ``(H, W)``.
        defect: a key of ``DEFECTS`` or None for a normal image.
        size_class: one of ``DEFECT_SIZE_CLASSES[defect]`` (default the first).
    """
    h, w = shape
    s = min(h, w) / REF_SIDE
    surface = SURFACES[cat.surface](rng, h, w, cat, s)
    if defect is None:
        return Rendered(
            surface.rgb.astype(np.float32),
            np.zeros((h, w), bool),
            {"defect_type": GOOD, "position": NO_POSITION, "size": "none", "shape": "none", "colour": "none"},
        )
    if defect not in DEFECTS:
        raise ValueError(f"unknown defect type {defect!r}; known: {sorted(DEFECTS)}")
    size_class = size_class or DEFECT_SIZE_CLASSES[defect][0]
    cells = np.flatnonzero(surface.region)
    centre = np.array(np.unravel_index(cells[rng.integers(len(cells))], (h, w)), np.float32)
    mask, shape_word = DEFECTS[defect](rng, centre, h, w, s, size_class)
    mask &= surface.body
    if not mask.any():
        raise RuntimeError(
            f"{cat.name}: empty {defect} mask (centre {centre}); the region/body of {cat.surface} disagree"
        )
    image, colour = _paint(rng, surface.rgb, mask, defect, cat)
    attrs = {"defect_type": defect, "position": position_on_grid(mask), "size": size_label(mask),
             "shape": shape_word, "colour": colour}
    return Rendered(image.astype(np.float32), mask, attrs)
