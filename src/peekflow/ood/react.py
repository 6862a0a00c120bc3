"""ReAct: rectified activations (Sun, Guo & Li, "ReAct: Out-of-distribution Detection With Rectified Activations",
NeurIPS 2021).

    c = the `percentile`-th percentile of every value of the fit store's penultimate features (default 90)
    score(x) = log sum_k exp( (min(f(x), c) W^T + b)_k )            energy of the logits of the clipped features

On the pooled penultimate features (the paper's form: it clips the penultimate layer of a ResNet, after pooling), with
the store's last layer W, b. c is fitted on the ID training store (all rows) or a prototype bank (`_deepinversion`
/ `_deepdream`). Higher = more ID. pytorch-ood's ReAct takes the percentile as a fraction (0.9) and returns minus the
energy.
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import FLOAT64, checked_features, register_with_banks
from peekflow.ood.posthoc import Fitted, checked_percentile, head_energy


def percentile64(x: np.ndarray, percentile: float) -> float:
    """numpy's (linear) percentile of every value of `x`, interpolated in float64: numpy interpolates float32 input in
    float32 (relative error ~6e-8 of the threshold). One partitioned copy of the values, as numpy's own."""
    values = np.asarray(x).reshape(-1)
    position = percentile / 100 * (values.size - 1)
    low = int(position)
    high = min(low + 1, values.size - 1)
    values = np.partition(values, [low, high])
    a, b = float(values[low]), float(values[high])
    return a + (b - a) * (position - low)


@register_with_banks("react")
class ReAct(Fitted):
    precision = FLOAT64
    needs_last_layer = True
    settings_help = {"percentile": "clip at this percentile of the fit store's features (a list sweeps it)"}
    sweeps = ("percentile",)

    def __init__(self, percentile: float = 90.0):
        self.percentile = checked_percentile(percentile, f"{self.name}: percentile")

    def _fit(self, train: FeatureSet) -> None:
        self._threshold = percentile64(checked_features(train), self.percentile)

    def _score(self, data: FeatureSet) -> np.ndarray:
        return head_energy(self.name, data, lambda x: np.minimum(x, self._threshold))

