"""Energy score (Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020).

    score(x) = -E(x; T) = T * log sum_k exp(z_k / T)

i.e. the negative free energy; `temperature` T > 0 (default 1.0, the paper's choice). Evaluated as a stable
log-sum-exp in float64. Higher = more ID.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from peekflow.features.store import FeatureSet
from peekflow.ood.base import Detector, checked_logits, positive_number, register


@register("energy")
class Energy(Detector):
    precision = "float64: relative error <= 1e-14 (a log-sum-exp about the maximum)"
    needs_fit = False
    uses_features = False
    settings_help = {"temperature": "T of the score T log sum_k exp(z_k / T)"}

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(positive_number(temperature, "energy: temperature"))

    def score(self, data: FeatureSet) -> np.ndarray:
        t = self.temperature
        return t * logsumexp(checked_logits(data) / t, axis=1)
