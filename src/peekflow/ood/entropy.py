"""Entropy of the softmax (as an OOD score e.g. in Chan, Rottmann & Gottschalk, "Entropy Maximization and Meta
Classification for Out-of-Distribution Detection in Semantic Segmentation", ICCV 2021; OpenOOD's baseline).

    p = softmax(z),   score(x) = -H(p) = sum_k p_k log p_k

Logits only, as sum_k e_k (z_k - m) / S - log S with m = max_k z_k, e_k = exp(z_k - m), S = sum_k e_k: one exp
per logit, in the stored float32, and no log of a p_k (p_k = 0 terms count 0); each row's sums in float64.
Higher = more ID. pytorch-ood's Entropy returns +H with p clipped to [1e-7, 1] first: peekflow's score is its
negation wherever every p_k >= 1e-7.
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import Detector, register, stored_logits
from peekflow.ood.posthoc import softmax_parts


@register("entropy")
class Entropy(Detector):
    def __init__(self):
        pass

    def score(self, data: FeatureSet) -> np.ndarray:
        shifted, e, total, _ = softmax_parts(stored_logits(data))
        return np.einsum("ij,ij->i", e, shifted, dtype=np.float64) / total - np.log(total)
