"""DICE: directed sparsification of the last layer (Sun & Li, "DICE: Leveraging Sparsification for
Out-of-Distribution Detection", ECCV 2022).

    m = mean of the fit store's penultimate features [D]
    V = m * W   (contribution of feature j to class k, [K,D]);   keep = V > the `sparsity` quantile of all of V
    score(x) = log sum_k exp( x (W * keep)^T + b )_k                  energy of the sparsified layer's logits

On the pooled penultimate features with the store's last layer W, b; m is fitted on the ID training store (all
rows) or a prototype bank (`_deepinversion` / `_deepdream`). `sparsity` 0.7 is the paper's ImageNet setting (the
share of weights set to zero; quantile with linear interpolation, as torch.quantile). Higher = more ID
(pytorch-ood's DICE, `p` = sparsity, returns minus the energy).
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import FLOAT64, checked_features, register_with_banks
from peekflow.ood.posthoc import Fitted, column_mean, head_energy, last_layer


@register_with_banks("dice")
class DICE(Fitted):
    precision = FLOAT64
    needs_last_layer = True
    settings_help = {"sparsity": "share of the last layer's weights set to zero, in [0, 1) (a list sweeps it)"}
    sweeps = ("sparsity",)

    def __init__(self, sparsity: float = 0.7):
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
            raise ValueError(f"{self.name}: sparsity must be a number in [0, 1), got {sparsity!r}")
        self.sparsity = float(sparsity)

    def _fit(self, train: FeatureSet) -> None:
        x = checked_features(train)
        w = last_layer(self.name, train).weight
        contribution = column_mean(x) * w
        self._weight = np.where(contribution > np.quantile(contribution, self.sparsity), w, 0).astype(np.float32)

    def _score(self, data: FeatureSet) -> np.ndarray:
        return head_energy(self.name, data, weight=self._weight)
