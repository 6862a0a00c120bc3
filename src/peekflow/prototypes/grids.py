"""The PNG grid of a prototype file: its prototypes grouped by class, one row per class (the first classes); for
caricatures, each reference image beside its caricature."""

from __future__ import annotations

import numpy as np

from peekflow.data.folder import Preprocessing
from peekflow.figures import save_grid
from peekflow.prototypes.store import Prototypes


def grid_order(targets: np.ndarray, max_classes: int) -> tuple[np.ndarray, int]:
    """Indices of the prototypes to show, grouped by class (first `max_classes` classes), and the column count."""
    shown = sorted(set(targets.tolist()))[:max(1, max_classes)]
    order = np.concatenate([np.flatnonzero(targets == c) for c in shown])
    most = max(int((targets == c).sum()) for c in shown)
    return order, most if most <= 16 else int(np.ceil(np.sqrt(len(order))))


def write_grid(path, p: Prototypes, max_classes: int) -> None:
    order, ncol = grid_order(np.asarray(p.targets), max_classes)
    size = p.images.shape[-1]
    save_grid(path, p.images[order], ncol=ncol, labels=[p.classes[t] for t in p.targets[order]],
              scale=2 if size <= 96 else 1)


def write_caricature_grid(path, protos: Prototypes, preprocessing: Preprocessing, grid_classes: int) -> None:
    """Each reference (loaded with the model's `preprocessing`) beside its caricature, for the first caricatures."""
    from peekflow.prototypes.caricature import load_references

    shown = min(len(protos.targets), 2 * grid_classes)
    first = protos.settings.get("shard", {"rows": [0]})["rows"][0]  # a shard's references start there
    refs = load_references(protos.settings["references"][first:first + shown], preprocessing, protos.images.shape[-1])
    pairs = np.stack([refs.numpy(), protos.images[:shown]], axis=1).reshape(-1, *protos.images.shape[1:])
    names = [protos.classes[t] for t in protos.targets[:shown]]
    save_grid(path, pairs, ncol=8 if shown >= 4 else 2 * shown,
              labels=[x for n in names for x in (n, f"{n} x{protos.settings['amplify']:g}")])
