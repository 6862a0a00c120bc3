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

from peekflow.ood.ash import _ASH
from peekflow.ood.base import register


@register("scale")
class SCALE(_ASH):
    settings_help = {"percentile": "s2 sums the features above this percentile of each sample (a list sweeps it)"}

    def __init__(self, percentile: float = 85.0):
        super().__init__(percentile)

    def shape(self, x, mask):
        kept = np.where(mask, x, np.float32(0)).sum(axis=1, dtype=np.float64)
        return x, np.exp(x.sum(axis=1, dtype=np.float64) / kept)
