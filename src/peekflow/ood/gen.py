"""GEN: generalised entropy (Liu, Lochman & Zach, "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution
Detection", CVPR 2023).

    p = softmax(z),   score(x) = -sum_{j in top-M of p} p_j^gamma (1 - p_j)^gamma

Logits only. `gamma` 0.1 and `top` M = 100 (capped at K) are the paper's ImageNet settings. As the paper's code: a
sum over the M largest probabilities, without clipping p. Higher = more ID. pytorch-ood's GEN returns the *mean*
over the M terms, with p clipped to [1e-7, 1 - 1e-7]: peekflow's score is -M times it where no p is clipped.
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import Detector, checked_logits, positive_number, register
from peekflow.ood.posthoc import softmax_parts


@register("gen")
class GEN(Detector):
    settings_help = {"gamma": "exponent of p^gamma (1 - p)^gamma (a list sweeps it)",
                     "top": "M: only the M largest probabilities count (capped at the number of classes)"}
    sweeps = ("gamma",)

    def __init__(self, gamma: float = 0.1, top: int = 100):
        self.gamma = float(positive_number(gamma, "gen: gamma"))
        self.top = int(positive_number(top, "gen: top", integer=True))

    def score(self, data: FeatureSet) -> np.ndarray:
        _, e, total, _ = softmax_parts(checked_logits(data))  # float64: p^gamma magnifies tiny p
        if self.top < e.shape[1]:
            e = -np.partition(-e, self.top - 1, axis=1)[:, : self.top]
        p, q = e / total[:, None], (total[:, None] - e) / total[:, None]  # q = 1 - p, exact where p ~ 1
        with np.errstate(divide="ignore"):  # p = 0: log -> -inf, term exp(-inf) = 0
            exponent = self.gamma * np.log(p * q)  # float64: no product p q underflows before it would in the paper
        return -np.exp(exponent.astype(np.float32)).sum(axis=1, dtype=np.float64)  # terms ~1e-7 relative
