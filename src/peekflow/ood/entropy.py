"""Entropy of the softmax (as an OOD score e.g. in Chan, Rottmann & Gottschalk, "Entropy Maximization and Meta
Classification for Out-of-Distribution Detection in Semantic Segmentation", ICCV 2021; OpenOOD's baseline).

    p = softmax(z),   score(x) = -H(p) = sum_k p_k log p_k

Logits only, exact in float64 (log p from a log-sum-exp; p_k = 0 terms count 0). Higher = more ID. pytorch-ood's
Entropy returns +H with p clipped to [1e-7, 1] first: peekflow's score is its negation wherever every p_k >= 1e-7.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from peekflow.features.store import FeatureSet
from peekflow.ood.base import Detector, checked_logits, register


@register("entropy")
class Entropy(Detector):
    def __init__(self):
        pass

    def score(self, data: FeatureSet) -> np.ndarray:
        log_p = log_softmax(checked_logits(data), axis=1)
        return (np.exp(log_p) * log_p).sum(axis=1)
