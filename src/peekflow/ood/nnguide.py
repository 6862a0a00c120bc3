"""NNGuide: nearest-neighbour guidance (Park, Jung & Teoh, "Nearest Neighbor Guidance for Out-of-Distribution
Detection", ICCV 2023).

    e(x) = log sum_k exp(z_k)                                     energy (from the stored logits)
    bank = { e(x_i) * x_i / ||x_i|| }  over the fit rows           energy-scaled unit features
    score(x) = e(x) * mean of the k largest < x / ||x||, b >,  b in bank

On the pooled penultimate features; the bank is the ID training store (or a `samples_per_class` seeded subset: the
paper keeps 1% of ImageNet's training set) or a prototype bank (`_deepinversion` / `_deepdream`). `k` 100 is the
paper's ImageNet setting. The bank is held once as float32 and searched exactly, query and bank chunk by chunk.
Higher = more ID (pytorch-ood's NNGuide returns minus the score; its energies come from its head, peekflow's from
the stored logits).
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import checked_features, checked_logits, positive_number, register_with_banks
from peekflow.ood.knn import per_class_sample
from peekflow.ood.neighbours import as_unit_rows
from peekflow.ood.posthoc import Fitted, energy, row_chunks

BANK_CHUNK = 4096


def top_k_mean(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest inner products of each query row with the bank rows (float64 [n])."""
    best = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    for rows in row_chunks(len(bank), BANK_CHUNK):
        both = np.concatenate([best, queries @ bank[rows].T], axis=1)
        keep = min(k, both.shape[1])
        best = np.partition(both, both.shape[1] - keep, axis=1)[:, -keep:]
    return best.mean(axis=1, dtype=np.float64)


@register_with_banks("nnguide")
class NNGuide(Fitted):
    settings_help = {"k": "the guidance averages the k largest similarities to the bank (a list sweeps it)",
                     "samples_per_class": "bank of this many seeded rows per class (null: every row)",
                     "seed": "seed of those rows"}
    sweeps = ("k",)

    def __init__(self, k: int = 100, samples_per_class: int | None = None, seed: int = 0):
        self.k = int(positive_number(k, f"{self.name}: k", integer=True))
        if samples_per_class is not None:
            samples_per_class = int(positive_number(samples_per_class, f"{self.name}: samples_per_class", integer=True))
        self.samples_per_class, self.seed = samples_per_class, int(seed)

    def _fit(self, train: FeatureSet) -> None:
        x, z = checked_features(train), checked_logits(train)
        rows = np.arange(len(x)) if self.samples_per_class is None else \
            per_class_sample(train.labels, self.samples_per_class, self.seed, f"{self.name} bank {train.name!r}")
        if self.k > len(rows):
            raise ValueError(f"{self.name}: k={self.k} exceeds the bank size {len(rows)} of {train.name!r}")
        self._bank = np.empty((len(rows), x.shape[1]), dtype=np.float32)
        for chunk in row_chunks(len(rows)):
            r = rows[chunk]
            self._bank[chunk] = as_unit_rows(x[r], copy=True) * energy(z[r])[:, None].astype(np.float32)

    def _score(self, data: FeatureSet) -> np.ndarray:
        x, z, out = checked_features(data), checked_logits(data), np.empty(len(data.labels))
        for rows in row_chunks(len(out), 1024):
            out[rows] = energy(z[rows]) * top_k_mean(as_unit_rows(x[rows], copy=True), self._bank, self.k)
        return out
