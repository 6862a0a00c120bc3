"""SCALE (Xu, Chen, Franchi & Yao, "Scaling for Training Time and Post-hoc Out-of-distribution Detection
Enhancement", ICLR 2024).

    s1 = sum(x),  s2 = sum of the D - round(D * percentile / 100) largest entries of x
    score(x) = log sum_k exp( (x * exp(s1 / s2)) W^T + b )_k        energy of the rescaled features' logits

Nothing is pruned (unlike ASH-S): the features are only rescaled. On the pooled penultimate features with the store's
last layer W, b (the paper shapes the maps before pooling). `percentile` 85 is the authors' ImageNet setting
(github.com/kai422/SCALE, configs/postprocessors/scale.yml; OpenOOD v1.5's too); pytorch-ood's is a fraction, default
0.65. Nothing is fitted. Higher = more ID (pytorch-ood returns minus the energy).
"""

from __future__ import annotations

import numpy as np

from peekflow.ood.ash import _ASH, kept
from peekflow.ood.base import register


@register("scale")
class SCALE(_ASH):
    settings_help = {"percentile": "s2 sums the features above this percentile of each sample (a list sweeps it)"}

    def __init__(self, percentile: float = 85.0):
        super().__init__(percentile)

    def shaped(self, x):
        """(x, exp(s1 / s2)): only the sum of the largest entries is needed, so a partition of the values (no mask)."""
        d = x.shape[1]
        keep = kept(d, self.percentile)
        s2 = np.partition(x, d - keep, axis=1)[:, d - keep:].sum(axis=1, dtype=np.float64) if keep else 0.0
        return x, np.exp(x.sum(axis=1, dtype=np.float64) / s2)
