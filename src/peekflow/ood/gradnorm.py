"""GradNorm (Huang, Geng & Li, "On the Importance of Gradients for Detecting Distributional Shifts in the Wild",
NeurIPS 2021), in closed form.

    p = softmax(z / T),  z = x W^T + b
    L = -sum_k log p_k          the paper's loss: cross-entropy to the uniform target, summed over the classes
    dL/dW = (K p - 1) x^T / T    (exact: the last layer is linear)
    score(x) = || dL/dW ||_1 = ||x||_1 * sum_k |K p_k - 1| / T

The gradient w.r.t. the last layer's weight (as the paper's code; not the bias), computed exactly from the pooled
penultimate features and W, b: no backward pass. `temperature` T = 1 is the paper's. Nothing is fitted. Higher =
more ID. pytorch-ood's GradNorm (with its parameter filter on the last weight) averages the loss over the classes
and returns minus the norm: peekflow's score is -K times it.
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import FLOAT64, Detector, positive_number, register
from peekflow.ood.posthoc import features64, last_layer, row_chunks, softmax


@register("gradnorm")
class GradNorm(Detector):
    precision = FLOAT64
    uses_features = True
    needs_last_layer = True
    settings_help = {"temperature": "T of softmax(z / T) (a list sweeps it)"}
    sweeps = ("temperature",)

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(positive_number(temperature, "gradnorm: temperature"))

    def score(self, data: FeatureSet) -> np.ndarray:
        layer = last_layer(self.name, data)
        out = np.empty(len(data.labels))
        for rows in row_chunks(len(out)):
            x = features64(data, rows)
            p = softmax(layer.logits(x) / self.temperature)
            out[rows] = np.abs(x).sum(axis=1) * np.abs(p.shape[1] * p - 1).sum(axis=1) / self.temperature
        return out
