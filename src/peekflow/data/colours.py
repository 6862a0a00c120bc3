"""Named colours for generated images: a small palette, jitter that keeps the name true, and contrast rules."""

from __future__ import annotations

import numpy as np

PALETTE = {
    "red": (215, 35, 35),
    "orange": (245, 135, 25),
    "yellow": (240, 220, 40),
    "green": (45, 165, 60),
    "cyan": (40, 205, 215),
    "blue": (35, 75, 215),
    "purple": (135, 55, 185),
    "pink": (245, 135, 195),
    "brown": (125, 75, 35),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "black": (20, 20, 20),
}
NAMES = tuple(PALETTE)
JITTER = 12  # per channel; small enough that the name stays true
MIN_CONTRAST = 150.0  # RGB distance between base colours of a shape and its background


def distance(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float)))


CONTRASTING = {
    bg: tuple(n for n in NAMES if distance(PALETTE[n], PALETTE[bg]) >= MIN_CONTRAST) for bg in NAMES
}


def jittered(name: str, rng: np.random.Generator) -> np.ndarray:
    """Base colour of `name` plus a little per-channel noise, as float RGB in [0, 255]."""
    base = np.asarray(PALETTE[name], float)
    return np.clip(base + rng.uniform(-JITTER, JITTER, 3), 0, 255)


def pick_pair(rng: np.random.Generator) -> tuple[str, str]:
    """(foreground, background) names whose base colours differ by at least MIN_CONTRAST."""
    bg = NAMES[rng.integers(len(NAMES))]
    options = CONTRASTING[bg]
    return options[rng.integers(len(options))], bg


def related(colour: np.ndarray, background: np.ndarray, step: float = 60.0) -> np.ndarray:
    """A lighter or darker shade of `colour`, `step` away from it (the fill-pattern colour): visible, yet much closer
    to the shape colour than the background is, so the silhouette stays the strongest edge. Of the two directions,
    the one farther from `background` wins."""
    shades = []
    for target in (np.full(3, 255.0), np.zeros(3)):
        span = distance(target, colour)
        if span > 1e-6:
            shades.append(colour + min(1.0, step / span) * (target - colour))
    return max(shades, key=lambda c: (distance(c, colour) >= step / 2, distance(c, background)))


def nearest_name(rgb) -> str:
    return min(NAMES, key=lambda n: distance(PALETTE[n], rgb))
