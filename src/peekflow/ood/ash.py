"""ASH: activation shaping (Djurisic, Bozanic, Ashok & Liu, "Extremely Simple Activation Shaping for
Out-of-Distribution Detection", ICLR 2023), three variants, each scored by the energy of the shaped features' logits.

    keep   = the D - round(D * percentile / 100) largest entries of x (per sample), the rest set to 0
    ASH-P  x' = pruned x
    ASH-B  x' = keep-mask * sum(x) / |keep|                   binarised, the sum spread evenly
    ASH-S  x' = pruned x * exp(sum(x) / sum(pruned x))        rescaled
    score(x) = log sum_k exp( (x' W^T + b)_k )

peekflow applies ASH to the *pooled* penultimate features [N,D] (what feature stores hold), with the store's last
layer W, b; the paper prunes the feature *maps* before pooling (its ResNet-50 results are on [C,H,W] maps), so
results differ from the paper's table. `percentile` 90 is the paper's ImageNet setting (pytorch-ood: a fraction,
default 0.65). Nothing is fitted. Higher = more ID (pytorch-ood returns minus the energy).
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import FLOAT64, Detector, register
from peekflow.ood.posthoc import checked_percentile, head_energy


def kept(d: int, percentile: float) -> int:
    """How many of a row's d entries a pruning at `percentile` keeps: d - round(d * percentile / 100)."""
    return d - int(np.round(d * percentile / 100))


def top_mask(x: np.ndarray, percentile: float) -> np.ndarray:
    """Boolean [n,D]: the kept(D, percentile) largest entries of each row."""
    keep = kept(x.shape[1], percentile)
    mask = np.zeros(x.shape, dtype=bool)
    if keep > 0:
        np.put_along_axis(mask, np.argpartition(-x, keep - 1, axis=1)[:, :keep], True, axis=1)
    return mask


class _ASH(Detector):
    precision = FLOAT64
    uses_features = True
    needs_last_layer = True
    settings_help = {"percentile": "prune this share (percent) of each sample's features (a list sweeps it)"}
    sweeps = ("percentile",)

    def __init__(self, percentile: float = 90.0):
        self.percentile = checked_percentile(percentile, f"{self.name}: percentile")

    def score(self, data: FeatureSet) -> np.ndarray:
        return head_energy(self.name, data, self.shaped)

    def shaped(self, x: np.ndarray):
        return self.shape(x, top_mask(x, self.percentile))

    def shape(self, x: np.ndarray, mask: np.ndarray):
        """The shaped rows of the float64 chunk `x`, or (rows, per-row scale [n] float64)."""
        raise NotImplementedError


@register("ash_p")
class ASHP(_ASH):
    """ASH-P: prune all but the largest features (Djurisic et al., ICLR 2023), on pooled features."""

    def shape(self, x, mask):
        return np.where(mask, x, 0.0)


@register("ash_b")
class ASHB(_ASH):
    """ASH-B: prune, then binarise the kept features to sum(x) / kept (Djurisic et al., ICLR 2023), pooled."""

    def shape(self, x, mask):
        return mask.astype(np.float64), x.sum(axis=1) / mask.sum(axis=1)


@register("ash_s")
class ASHS(_ASH):
    """ASH-S: prune, then scale by exp(sum(x) / sum(kept)) (Djurisic et al., ICLR 2023), on pooled features."""

    def shape(self, x, mask):
        pruned = np.where(mask, x, 0.0)
        return pruned, np.exp(x.sum(axis=1) / pruned.sum(axis=1))
