"""Seeded per-class subsamples of a labelled image list: one function, so that a stage choosing images before
extraction (the emergence maps) and one choosing them from a store pick the same images."""

from __future__ import annotations

import numpy as np


def per_class_rows(labels, per_class: int, seed: int) -> np.ndarray:
    """Up to `per_class` seeded rows of every label >= 0, in increasing order. Applied to a list that already holds
    at most `per_class` rows of each label it returns all of them: choosing again from a subsample keeps it."""
    if per_class < 2:
        raise ValueError(f"per_class must be >= 2, got {per_class}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = []
    for label in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == label)
        picks.append(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    if not picks:
        raise ValueError("no labelled image (label >= 0) to analyse")
    return np.sort(np.concatenate(picks))
