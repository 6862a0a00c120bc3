"""Shape vocabulary of the embedded data set: unit geometry and supersampled mask rendering.

A shape is a list of polygons, each drawn additively or (for holes) subtractively. Geometry is normalised once so
that the shape's area centroid sits at the origin and its farthest point lies at distance 1; a shape placed at
centre (x, y) with radius r therefore has its mass centre at (x, y) and fits in a circle of radius r.

The near-OOD shapes share the rendering style of the ID shapes but none equals an ID shape under rotation and scale
(no diamond = rotated square, the ellipse has aspect 0.55, the star is not a pentagon).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

DEFAULT_ID_SHAPES = (
    "circle", "square", "triangle", "star", "cross", "ring", "heart", "arrow", "crescent", "lightning",
)
DEFAULT_NEAR_OOD_SHAPES = (
    "pentagon", "hexagon", "octagon", "ellipse", "trapezoid", "semicircle",
    "l_shape", "t_shape", "parallelogram", "drop", "chevron", "hourglass",
)

Polygon = np.ndarray  # [n, 2] float, image orientation (y grows downwards)


def _regular(n: int, phase_deg: float = -90.0, radius: float = 1.0) -> Polygon:
    t = np.deg2rad(phase_deg) + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], 1)


def _circle(radius: float = 1.0, dx: float = 0.0, n: int = 96) -> Polygon:
    return _regular(n, 0.0, radius) + [dx, 0.0]


def _star() -> Polygon:
    outer, inner = _regular(5), _regular(5, -90 + 36, 0.42)
    return np.stack([outer, inner], 1).reshape(-1, 2)


def _heart() -> Polygon:
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], 1)


def _drop() -> Polygon:
    # a disc whose top is drawn out into a point: r(t) shrinks to 0 towards the tip
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    x = np.sin(t) * np.sin(t / 2) ** 1.5
    y = -np.cos(t)
    return np.stack([x, 1.3 * y], 1)


def _p(*xy: float) -> Polygon:
    return np.asarray(xy, float).reshape(-1, 2)


# name -> list of (polygon, additive); coordinates before normalisation, any scale
_GEOMETRY = {
    "circle": [(_circle(), True)],
    "square": [(_regular(4, 45), True)],
    "triangle": [(_regular(3), True)],
    "star": [(_star(), True)],
    "cross": [(_p(-.3, -1, .3, -1, .3, -.3, 1, -.3, 1, .3, .3, .3, .3, 1, -.3, 1, -.3, .3, -1, .3, -1, -.3, -.3, -.3),
               True)],
    "ring": [(_circle(), True), (_circle(0.55), False)],
    "heart": [(_heart(), True)],
    "arrow": [(_p(-1, -.2, .15, -.2, .15, -.6, 1, 0, .15, .6, .15, .2, -1, .2), True)],
    "crescent": [(_circle(), True), (_circle(0.78, 0.5), False)],
    "lightning": [(_p(-.05, -1, -.6, .2, -.08, .2, -.3, 1, .6, -.3, .12, -.3, .5, -1), True)],
    "pentagon": [(_regular(5), True)],
    "hexagon": [(_regular(6), True)],
    "octagon": [(_regular(8, 22.5), True)],
    "ellipse": [(_circle() * [1.0, 0.55], True)],
    "trapezoid": [(_p(-1, .55, 1, .55, .45, -.55, -.45, -.55), True)],
    "semicircle": [(np.vstack([_circle()[48:], [[1.0, 0.0]]]), True)],
    "l_shape": [(_p(-.6, -1, -.15, -1, -.15, .55, .6, .55, .6, 1, -.6, 1), True)],
    "t_shape": [(_p(-1, -.8, 1, -.8, 1, -.35, .22, -.35, .22, 1, -.22, 1, -.22, -.35, -1, -.35), True)],
    "parallelogram": [(_p(-1, .35, .4, .35, 1, -.35, -.4, -.35), True)],
    "drop": [(_drop(), True)],
    "chevron": [(_p(-.8, -1, -.25, -1, .8, 0, -.25, 1, -.8, 1, .25, 0), True)],
    "hourglass": [(_p(-.7, -1, .7, -1, .12, 0, .7, 1, -.7, 1, -.12, 0), True)],
}
SHAPE_NAMES = tuple(_GEOMETRY)


def check_shape_names(names) -> None:
    unknown = [n for n in names if n not in _GEOMETRY]
    if unknown:
        raise ValueError(f"unknown shape name(s) {unknown}; valid names: {', '.join(SHAPE_NAMES)}")


def _fill_mask(parts, size: int) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for poly, additive in parts:
        draw.polygon([tuple(p) for p in poly.tolist()], fill=255 if additive else 0)
    return np.asarray(mask)


@functools.cache
def unit_shape(name: str) -> tuple[tuple[Polygon, bool], ...]:
    """Polygons of `name` with the area centroid at the origin and the farthest drawn point at distance 1."""
    check_shape_names([name])
    parts = _GEOMETRY[name]
    pts = np.vstack([p for p, add in parts if add])
    lo, span = pts.min(0), (pts.max(0) - pts.min(0)).max()
    n = 512  # rasterise once to find the centroid of the (possibly holed) area
    scaled = [((p - lo) / span * (n - 8) + 4, add) for p, add in parts]
    ys, xs = np.nonzero(_fill_mask(scaled, n))
    centroid = (np.array([xs.mean(), ys.mean()]) + 0.5 - 4) / (n - 8) * span + lo
    radius = np.linalg.norm(pts - centroid, axis=1).max()
    return tuple(((p - centroid) / radius, add) for p, add in parts)


def place(name: str, radius: float, rotation_deg: float) -> list[tuple[Polygon, bool]]:
    """Unit shape scaled to `radius` pixels and rotated about its centroid (not yet translated)."""
    a = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # counter-clockwise on screen (y down)
    return [(p @ rot * radius, add) for p, add in unit_shape(name)]


def extent(parts) -> tuple[np.ndarray, np.ndarray]:
    """(min xy, max xy) of the drawn area of placed polygons, relative to the centroid."""
    pts = np.vstack([p for p, add in parts if add])
    return pts.min(0), pts.max(0)


def render_mask(parts, centre, size: int, supersample: int = 4) -> np.ndarray:
    """Binary uint8 mask (0/255) at `size * supersample` pixels of placed polygons centred at `centre` (pixels)."""
    s = supersample
    # pixel (i, j) covers [j, j+1) x [i, i+1): PIL samples pixel centres, hence the half-pixel shift
    shifted = [((p + np.asarray(centre)) * s - 0.5, add) for p, add in parts]
    return _fill_mask(shifted, size * s)


def downsample(a: np.ndarray, factor: int) -> np.ndarray:
    """Box-average an [H, W] or [H, W, C] array by an integer factor (the antialiasing step)."""
    h, w = a.shape[0] // factor, a.shape[1] // factor
    return a.reshape(h, factor, w, factor, *a.shape[2:]).mean((1, 3))
