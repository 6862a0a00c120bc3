"""NCI: neural-collapse inspired score (Liu & Qin, "Detecting Out-of-distribution through the Lens of Neural
Collapse", CVPR 2025; arXiv 2311.01479).

    y = argmax_k z_k,  mu = mean of the fit store's penultimate features
    score(x) = < x - mu, w_y > / ||x - mu||  +  alpha * ||x||_1       proximity to the predicted class's weight
                                                                         vector, plus an L1-norm term
On the pooled penultimate features with the store's last layer W, b; mu is fitted on the ID training store or a
prototype bank (`_deepinversion` / `_deepdream`). `alpha` defaults to 0 (the proximity alone, pytorch-ood's
default; the paper tunes alpha per network). Higher = more ID (pytorch-ood's NCI returns minus the score).
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import FLOAT64, checked_features, register_with_banks
from peekflow.ood.posthoc import Fitted, column_mean, features64, head_logits, last_layer, row_chunks


@register_with_banks("nci")
class NCI(Fitted):
    precision = FLOAT64
    needs_last_layer = True
    settings_help = {"alpha": "weight of the L1 norm of the features (a list sweeps it)"}
    sweeps = ("alpha",)

    def __init__(self, alpha: float = 0.0):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"{self.name}: alpha must be a number >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    def _fit(self, train: FeatureSet) -> None:
        self._mean = column_mean(checked_features(train))

    def _score(self, data: FeatureSet) -> np.ndarray:
        layer = last_layer(self.name, data)
        w = layer.weight.astype(np.float64)
        out = np.empty(len(data.labels))
        for rows in row_chunks(len(out)):
            x = features64(data, rows)
            centred = x - self._mean
            proximity = np.einsum("ij,ij->i", centred, w[head_logits(layer, x).argmax(axis=1)]) / np.linalg.norm(
                centred, axis=1)
            out[rows] = proximity + self.alpha * np.abs(x).sum(axis=1)
        return out
