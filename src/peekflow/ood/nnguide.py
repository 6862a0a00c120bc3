"""NNGuide: nearest-neighbour guidance (Park, Jung & Teoh, "Nearest Neighbor Guidance for Out-of-Distribution
Detection", ICCV 2023).

    e(x) = log sum_k exp(z_k)                                     energy (from the stored logits)
    bank = { e(x_i) * x_i / ||x_i|| }  over the fit rows           energy-scaled unit features
    score(x) = e(x) * mean of the k largest < x / ||x||, b >,  b in bank

On the pooled penultimate features; the bank is the ID training store (or a `samples_per_class` seeded subset) or a
prototype bank (`_deepinversion` / `_deepdream`). Defaults: `k` 10, the authors' (github.com/roomo7time/nnguide,
configs/detector/nnguide.yaml `knn_k: 10`, also pytorch-ood's default); the authors' bank is a uniformly random 1% of
ImageNet's training set (`bankset_ratio=0.01`, 12.8k rows), OpenOOD v1.5's the first 1% of its training loader with
K = 100. peekflow keeps the whole fit store by default (its embedded data set is small); `samples_per_class: 13` is
about 1% of ImageNet, drawn per class rather than uniformly. The bank is searched exactly, query and bank chunk by
chunk, and never copied: the fitted detector keeps the fit store's float32 features (a reference; other dtypes are
converted once) and one factor e(x_i) / ||x_i|| per row, applied to each block of similarities, so the fit store must
not be modified while it scores.
Higher = more ID (pytorch-ood's NNGuide returns minus the score; its energies come from its head, peekflow's from
the stored logits).
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import checked_features, positive_number, register_with_banks, stored_logits
from peekflow.ood.knn import per_class_sample, too_few_for_k
from peekflow.ood.neighbours import as_unit_rows
from peekflow.ood.posthoc import Fitted, energy, logits64, row_chunks

BANK_CHUNK = 4096  # bank rows per similarity block
QUERY_CHUNK = 256  # query rows per similarity block: blocks of 256 x 4096 float32 (4 MiB)


def top_k_mean(queries: np.ndarray, bank: np.ndarray, scale: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest scale_i < q, bank_i > over the bank rows i, for each query row q (float64 [n]). The bank
    is walked in chunks; one buffer [n, k + BANK_CHUNK] holds the running top k and the chunk's similarities, so the
    work arrays hold O(n x (BANK_CHUNK + k)) values."""
    keep = min(k, len(bank))
    buffer = np.empty((len(queries), keep + min(BANK_CHUNK, len(bank))), dtype=np.float32)
    filled = 0  # columns of `buffer` holding candidates
    for rows in row_chunks(len(bank), BANK_CHUNK):
        similarities = bank[rows] @ queries.T  # [chunk, n]: this operand order is the faster one for BLAS here
        similarities *= scale[rows, None]
        total = filled + len(similarities)
        buffer[:, filled:total] = similarities.T
        if total > keep:
            candidates = buffer[:, :total]
            candidates.partition(total - keep, axis=1)
            buffer[:, :keep] = candidates[:, total - keep :]
            total = keep
        filled = total
    return buffer[:, :filled].mean(axis=1, dtype=np.float64)


@register_with_banks("nnguide")
class NNGuide(Fitted):
    precision = "float32 similarities (the bank is searched in float32): error <= 1e-6 x the largest score magnitude"
    pairwise = True  # the similarity of every query to every bank row
    settings_help = {"k": "the guidance averages the k largest similarities to the bank (a list sweeps it)",
                     "samples_per_class": "bank of this many seeded rows per class (null: every row)",
                     "seed": "seed of those rows"}
    sweeps = ("k",)

    def __init__(self, k: int = 10, samples_per_class: int | None = None, seed: int = 0):
        self.k = int(positive_number(k, f"{self.name}: k", integer=True))
        if samples_per_class is not None:
            samples_per_class = int(positive_number(samples_per_class, f"{self.name}: samples_per_class", integer=True))
        self.samples_per_class, self.seed = samples_per_class, int(seed)

    def fit_size_problem(self, rows: int, class_rows: dict | None, dims: int) -> str | None:
        return too_few_for_k(self.k, rows, class_rows, self.samples_per_class)

    def _fit(self, train: FeatureSet) -> None:
        x, z = checked_features(train), stored_logits(train)
        if self.samples_per_class is not None:
            rows = per_class_sample(train.labels, self.samples_per_class, self.seed, f"{self.name} bank {train.name!r}")
            x, z = x[rows], z[rows]
        if self.k > len(x):
            raise ValueError(f"{self.name}: k={self.k} exceeds the bank size {len(x)} of {train.name!r}")
        # the bank e_i x_i / ||x_i|| is kept as the stored rows x_i (float32, not copied when they already are)
        # and one factor e_i / ||x_i|| per row, applied to each block of similarities
        self._bank = np.ascontiguousarray(x, dtype=np.float32)
        self._scale = np.empty(len(x), dtype=np.float32)
        for rows in row_chunks(len(x)):
            norms = np.sqrt(np.einsum("ij,ij->i", self._bank[rows], self._bank[rows], dtype=np.float64))
            self._scale[rows] = energy(z[rows]) / np.maximum(norms, 1e-12)

    def _score(self, data: FeatureSet) -> np.ndarray:
        x, out = checked_features(data), np.empty(len(data.labels))
        for rows in row_chunks(len(out), QUERY_CHUNK):
            guidance = top_k_mean(as_unit_rows(x[rows], copy=True), self._bank, self._scale, self.k)
            out[rows] = energy(logits64(data, rows)) * guidance
        return out
