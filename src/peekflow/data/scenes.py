"""One shape on a background: sample the scene, render it 4x supersampled, and describe it by concepts.

Every attribute is true of the pixels: the shape's mass centre lies in the named third (pos_x / pos_y), its outline
and any solid fill carry the named colour, the background's mean colour is near the named background colour, and the
shape contrasts with the background by at least `colours.MIN_CONTRAST`. Fill patterns are drawn inside an outline of
the shape colour, so the silhouette stays legible.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import minimum_filter

from peekflow.data import colours
from peekflow.data.shapes import downsample, extent, place, render_mask
from peekflow.data.textures import FILL_TEXTURES, pattern

# radius of the shape's enclosing circle (about its centroid) as a fraction of the image side
SIZES = {"small": (0.25, 0.3), "medium": (0.3, 0.36), "large": (0.36, 0.43)}
BACKGROUNDS = ("plain", "gradient", "noise")
POS_X = ("left", "centre", "right")
POS_Y = ("top", "middle", "bottom")
SUPERSAMPLE = 4
SHAPE_COLUMNS = ("shape", "colour", "texture", "size", "pos_x", "pos_y", "rotation", "background",
                 "background_colour")


def _position(lo: float, hi: float, size: int, rng: np.random.Generator) -> tuple[float, int]:
    """A centre coordinate in [lo, hi] and the third it lies in; the third is drawn uniformly among those reachable,
    and centres keep a small margin from the lines between thirds so the label is unambiguous."""
    margin = 0.03 * size
    options = []
    for k in range(3):
        a = k * size / 3 + (margin if k > 0 else 0)
        b = (k + 1) * size / 3 - (margin if k < 2 else 0)
        if min(hi, b) > max(lo, a):
            options.append((k, max(lo, a), min(hi, b)))
    k, a, b = options[rng.integers(len(options))]  # the centre third is always reachable (radius < size / 2)
    return rng.uniform(a, b), k


def _background(kind: str, colour: np.ndarray, shape_colour: np.ndarray, size: int, rng: np.random.Generator):
    if kind == "plain":
        return np.broadcast_to(colour, (size, size, 3))
    if kind == "gradient":
        # towards a 25% lighter or darker shade, whichever moves away from the shape colour
        shades = [colour + 0.25 * (255 - colour), 0.75 * colour]
        other = max(shades, key=lambda c: colours.distance(c, shape_colour))
        a = rng.uniform(0, 2 * np.pi)
        y, x = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
        t = np.clip(x * np.cos(a) + y * np.sin(a) + 0.5, 0, 1)[..., None]
        return colour * (1 - t) + other * t
    if kind == "noise":
        return np.clip(colour + rng.normal(0, 14, (size, size, 1)), 0, 255)
    raise ValueError(f"unknown background {kind!r}; valid: {', '.join(BACKGROUNDS)}")


def shape_image(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Render shape `name` on a size x size RGB image: (uint8 [size, size, 3], concept attributes)."""
    fg_name, bg_name = colours.pick_pair(rng)
    fg, bg = colours.jittered(fg_name, rng), colours.jittered(bg_name, rng)
    size_name = list(SIZES)[rng.integers(len(SIZES))]
    radius = rng.uniform(*SIZES[size_name]) * size
    rotation = int(rng.integers(360))
    parts = place(name, radius, rotation)
    lo, hi = extent(parts)
    cx, kx = _position(1 - lo[0], size - 1 - hi[0], size, rng)
    cy, ky = _position(1 - lo[1], size - 1 - hi[1], size, rng)
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    texture = FILL_TEXTURES[rng.integers(len(FILL_TEXTURES))]

    img = _background(background, bg, fg, size, rng)
    mask = render_mask(parts, (cx, cy), size, SUPERSAMPLE)
    alpha = downsample(mask.astype(np.float32) / 255, SUPERSAMPLE)[..., None]
    img = img * (1 - alpha) + fg * alpha
    if texture != "solid":
        outline = max(1.0, 0.12 * radius) * SUPERSAMPLE
        inner = minimum_filter(mask, size=2 * int(round(outline)) + 1) > 0
        period = max(3.0, rng.uniform(0.3, 0.45) * radius) * SUPERSAMPLE
        fill = pattern(texture, size * SUPERSAMPLE, period, rng) & inner
        beta = downsample(fill.astype(np.float32), SUPERSAMPLE)[..., None]
        img = img * (1 - beta) + colours.related(fg, bg) * beta
    attrs = {
        "shape": name, "colour": fg_name, "texture": texture, "size": size_name, "pos_x": POS_X[kx],
        "pos_y": POS_Y[ky], "rotation": rotation, "background": background, "background_colour": bg_name,
    }
    return np.rint(img).astype(np.uint8), attrs
