"""Periodic and smooth two-colour patterns: fills inside shapes and the full-frame "textures" (far-OOD) set.

A pattern is a boolean field over pixel centres of an n x n grid, in a frame rotated by `angle` and shifted by a
random phase; callers evaluate it at a supersampled resolution and box-average it down for antialiasing.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from peekflow.data import colours
from peekflow.data.shapes import downsample

FILL_TEXTURES = ("solid", "stripes", "dots", "checker")
TEXTURE_PATTERNS = ("stripes", "checker", "dots", "grid", "waves", "blobs")


def _frame(n: int, angle_deg: float, phase) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    a = np.deg2rad(angle_deg)
    return x * np.cos(a) + y * np.sin(a) + phase[0], -x * np.sin(a) + y * np.cos(a) + phase[1]


def smooth_field(n: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency random field (bicubic upsampling of cells x cells gaussian noise), unit std, shape [n, n]."""
    low = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    # a border of one cell is cropped so the field does not flatten towards the edges
    big = np.asarray(Image.fromarray(low, "F").resize((n * (cells + 2) // cells,) * 2, Image.BICUBIC))
    off = n // cells
    field = big[off:off + n, off:off + n]
    return (field - field.mean()) / (field.std() + 1e-6)


def pattern(kind: str, n: int, period: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean [n, n] field of pattern `kind` with the given period (in pixels of this grid), random angle and phase."""
    if kind == "blobs":
        return smooth_field(n, max(3, round(n / period)), rng) > 0
    u, v = _frame(n, rng.uniform(0, 180), rng.uniform(0, period, 2))
    if kind == "stripes":
        return (u % period) < period / 2
    if kind == "checker":
        half = period / 2
        return ((np.floor(u / half) + np.floor(v / half)) % 2) == 0
    if kind == "dots":
        du, dv = u % period - period / 2, v % period - period / 2
        return du * du + dv * dv < (0.3 * period) ** 2
    if kind == "grid":
        return (u % period < 0.22 * period) | (v % period < 0.22 * period)
    if kind == "waves":
        amp = rng.uniform(0.15, 0.35) * period
        wavelength = rng.uniform(1.5, 3.0) * period
        return ((u + amp * np.sin(2 * np.pi * v / wavelength)) % period) < period / 2
    raise ValueError(f"unknown pattern {kind!r}; valid: {', '.join(TEXTURE_PATTERNS)}")


def texture_image(kind: str, size: int, rng: np.random.Generator, supersample: int = 2):
    """Full-frame two-colour texture without any shape: (uint8 [size, size, 3], attributes)."""
    fg_name, bg_name = colours.pick_pair(rng)
    fg, bg = colours.jittered(fg_name, rng), colours.jittered(bg_name, rng)
    n = size * supersample
    period = rng.uniform(size / 10, size / 4) * supersample
    cover = downsample(pattern(kind, n, period, rng).astype(np.float32), supersample)[..., None]
    img = bg * (1 - cover) + fg * cover
    return np.rint(img).astype(np.uint8), {"pattern": kind, "colour": fg_name, "background_colour": bg_name}
