"""fDBD: fast decision-boundary distance (Liu & Qin, "Fast Decision Boundary based Out-of-Distribution Detector",
ICML 2024).

    y = argmax_k z_k,  z = x W^T + b
    score(x) = 1 / ((K - 1) ||x - mu||) * sum_{c != y} |z_y - z_c| / ||w_y - w_c||

|z_y - z_c| / ||w_y - w_c|| is the feature-space distance from x to the decision boundary between classes y and c;
mu is the mean of the fit store's penultimate features (ID training store, or a prototype bank: `_deepinversion` /
`_deepdream`). On the pooled penultimate features with the store's last layer W, b. ||x - mu|| is floored at 1e-8
(as pytorch-ood). Higher = more ID (pytorch-ood's fDBD returns minus the score).
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import FLOAT64, checked_features, register_with_banks
from peekflow.ood.posthoc import Fitted, column_mean, features64, head_logits, last_layer, row_chunks


def weight_gaps(weight: np.ndarray) -> np.ndarray:
    """||w_p - w_c|| [K, K] of the rows of W, from its Gram matrix (no K x K x D array), in float64; the diagonal
    (whose numerator is 0) is 1."""
    w = weight.astype(np.float64)
    gram = w @ w.T
    squared = np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram
    gaps = np.sqrt(np.maximum(squared, 0.0))
    np.fill_diagonal(gaps, 1.0)
    return gaps


@register_with_banks("fdbd")
class FDBD(Fitted):
    precision = FLOAT64
    needs_last_layer = True

    def __init__(self):
        pass

    def _fit(self, train: FeatureSet) -> None:
        self._mean = column_mean(checked_features(train))

    def _score(self, data: FeatureSet) -> np.ndarray:
        layer = last_layer(self.name, data)
        gaps = weight_gaps(layer.weight)
        out = np.empty(len(data.labels))
        for rows in row_chunks(len(out)):
            x = features64(data, rows)
            z = head_logits(layer, x)
            y = z.argmax(axis=1)
            boundary = (np.abs(z - z[np.arange(len(z)), y][:, None]) / gaps[y]).sum(axis=1)
            distance = np.maximum(np.linalg.norm(x - self._mean, axis=1), 1e-8)
            out[rows] = boundary / ((z.shape[1] - 1) * distance)
        return out
