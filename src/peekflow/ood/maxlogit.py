"""MaxLogit (Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling Out-of-Distribution
Detection for Real-World Settings", ICML 2022).

    score(x) = max_k z_k

Logits only. Higher = more ID (pytorch-ood's MaxLogit returns -max_k z_k: peekflow's score is its negation).
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import Detector, register, stored_logits


@register("maxlogit")
class MaxLogit(Detector):
    precision = "exact: the stored float32 maximum"

    def __init__(self):
        pass

    def score(self, data: FeatureSet) -> np.ndarray:
        return stored_logits(data).max(axis=1).astype(np.float64)  # a maximum needs no wider type
