"""MSP: maximum softmax probability (Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
Out-of-Distribution Examples in Neural Networks", ICLR 2017).

    score(x) = max_k softmax(z)_k = 1 / sum_j exp(z_j - max_k z_k)

Computed in float64 after subtracting the row maximum, so large logits cannot overflow. Higher = more ID.
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import Detector, checked_logits, register


@register("msp")
class MSP(Detector):
    precision = "float64: relative error <= 1e-15 (its rounded value: rows with 1 - p < 1.1e-16 tie at 1)"
    needs_fit = False
    uses_features = False

    def __init__(self):
        pass

    def score(self, data: FeatureSet) -> np.ndarray:
        z = checked_logits(data)
        shifted = z - z.max(axis=1, keepdims=True)  # the largest entry becomes exp(0) = 1
        return 1.0 / np.exp(shifted).sum(axis=1)
