"""What the emergence analysis reads from a feature store with spatial maps: a seeded subsample of labelled images,
their tempered output probabilities, and per layer the sample features (spatial means) and regional features (the
map average-pooled to a grid x grid of cells, so every layer has the same regions of the image)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from peekflow.data.sampling import per_class_rows
from peekflow.emergence.sample import softmax_targets
from peekflow.features.store import open_store

READ_ROWS = 256  # images whose whole maps are in memory at once


@dataclass
class Samples:
    rows: np.ndarray  # [N] rows of the store, increasing
    labels: torch.Tensor  # [N] int64
    probs: torch.Tensor  # [N, Y] softmax(logits / T)
    paths: list[str]
    classes: list[str] = field(default_factory=list)


def load_samples(path, per_class: int, temperature: float, seed: int) -> Samples:
    with open_store(path) as h5:
        rows = per_class_rows(h5["labels"][:], per_class, seed)
        classes = h5.attrs.get("classes", "[]")
        return Samples(
            rows=rows,
            labels=torch.from_numpy(h5["labels"][rows]),
            probs=softmax_targets(torch.from_numpy(h5["logits"][rows]).double(), temperature).float(),
            paths=[p.decode() if isinstance(p, bytes) else p for p in h5["paths"][rows]],
            classes=json.loads(classes) if isinstance(classes, str) else list(classes),
        )


def region_grid(maps: torch.Tensor, grid: int, what: str = "map") -> torch.Tensor:
    """[N, C, H, W] -> [N, C, grid * grid] cell means (cells in row-major order)."""
    if grid < 1 or grid > min(maps.shape[-2:]):
        raise ValueError(f"grid {grid} does not fit the {what} of {tuple(maps.shape[-2:])} positions: "
                         f"choose 1 <= grid <= {min(maps.shape[-2:])}")
    return torch.nn.functional.adaptive_avg_pool2d(maps.float(), grid).flatten(2)


def load_layer(path, layer: str, rows: np.ndarray, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample features [N, C], regional features [N, C, grid^2]) of `layer` for the store rows `rows`."""
    with open_store(path) as h5:
        key = f"maps/{layer}"
        if key not in h5:
            have = sorted(h5["maps"].keys()) if "maps" in h5 else []
            raise ValueError(f"feature store {path} has no spatial maps of layer {layer!r} (maps: {have}); extract it "
                           f"with settings maps: [{layer}]")
        features, regional = [], []
        for start in range(0, len(rows), READ_ROWS):  # block by block: memory O(block), not O(N) whole maps
            maps = torch.from_numpy(h5[key][rows[start:start + READ_ROWS]]).float()
            features.append(maps.mean(dim=(2, 3)))
            regional.append(region_grid(maps, grid, f"map of layer {layer!r}"))
    return torch.cat(features), torch.cat(regional)
