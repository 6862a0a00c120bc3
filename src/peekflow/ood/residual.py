"""Residual: the norm of the features' residual to the principal space (the baseline of Wang, Li, Feng & Zhang,
"ViM: Out-Of-Distribution with Virtual-logit Matching", CVPR 2022, section 3; OpenOOD's `residual`).

    u, R as in ViM (origin -pinv(W) b; basis of the residual space of the fit store's features, principal dim d)
    score(x) = -||(x - u) R||

On the pooled penultimate features with the store's last layer W, b (for u); fitted on the ID training store or a
prototype bank (`_deepinversion` / `_deepdream`). `dim` as ViM's. pytorch-ood has no Residual: tested against the
formula. Higher = more ID.
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import register_with_banks
from peekflow.ood.posthoc import features64, row_chunks
from peekflow.ood.vim import ViM, residual_norms, residual_space


@register_with_banks("residual")
class Residual(ViM):
    def _fit(self, train: FeatureSet) -> None:
        self._u, self._basis = residual_space(self.name, train, self.dim)

    def _score(self, data: FeatureSet) -> np.ndarray:
        out = np.empty(len(data.labels))
        for rows in row_chunks(len(out)):
            out[rows] = -residual_norms(features64(data, rows), self._u, self._basis)
        return out
