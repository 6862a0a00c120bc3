"""Pure-noise images, the "farthest OOD" set: gaussian, uniform, salt-and-pepper and blurred (low-frequency) noise,
either grey (one value per pixel) or coloured (independent channels)."""

from __future__ import annotations

import numpy as np

from peekflow.data.textures import smooth_field

NOISE_TYPES = ("gaussian", "uniform", "salt_pepper", "blurred")


def noise_image(kind: str, size: int, rng: np.random.Generator):
    """(uint8 [size, size, 3], attributes) for noise type `kind`."""
    coloured = bool(rng.integers(2))
    channels = 3 if coloured else 1
    shape = (size, size, channels)
    if kind == "gaussian":
        img = rng.uniform(80, 176, channels) + rng.uniform(25, 70) * rng.standard_normal(shape)
    elif kind == "uniform":
        low = rng.uniform(0, 100, channels)
        img = low + rng.uniform(size=shape) * rng.uniform(100, 255 - low)
    elif kind == "salt_pepper":
        img = np.broadcast_to(rng.uniform(60, 196, channels), shape).copy()
        u = rng.uniform(size=shape)
        p = rng.uniform(0.05, 0.3)
        img[u < p / 2] = 0
        img[u > 1 - p / 2] = 255
    elif kind == "blurred":
        cells = int(rng.integers(3, 13))
        field = np.stack([smooth_field(size, cells, rng) for _ in range(channels)], -1)
        img = rng.uniform(80, 176, channels) + rng.uniform(30, 60) * field
    else:
        raise ValueError(f"unknown noise type {kind!r}; valid: {', '.join(NOISE_TYPES)}")
    img = np.broadcast_to(np.clip(np.rint(img), 0, 255), (size, size, 3))
    return img.astype(np.uint8), {"noise": kind, "chroma": "colour" if coloured else "grey"}
