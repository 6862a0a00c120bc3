"""RMDS: relative Mahalanobis distance (Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, "A Simple Fix to Mahalanobis
Distance for Improving Near-OOD Detection", arXiv 2106.09022, 2021).

    MD_k(x) = (x - mu_k)^T Sigma^+ (x - mu_k)      class means, shared covariance (as peekflow's mahalanobis)
    MD_0(x) = (x - mu_0)^T Sigma_0^+ (x - mu_0)    one Gaussian of every labelled fit row (the "background")
    score(x) = -min_k ( MD_k(x) - MD_0(x) )

Covariances are maximum-likelihood (divided by N), pseudo-inverted, in float64. Fitted on the labelled rows of the
ID training store or of a prototype bank (`_deepinversion` / `_deepdream`). Higher = more ID. pytorch-ood's RMD
uses covariances *summed* over the rows (not divided by N) plus 1e-6 I, inverted, and returns +min_k: peekflow's
score is -N times it (up to that ridge).
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import checked_features, register_with_banks
from peekflow.ood.mahalanobis import class_means_and_tied_covariance, pinv_root
from peekflow.ood.posthoc import Fitted, features64, known_rows, row_chunks


def whitened(means: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = pinv_root(cov)
    return w, means @ w


def squared_distances(z: np.ndarray, means: np.ndarray) -> np.ndarray:
    """||z_i - m_c||^2 [n, C] in whitened coordinates."""
    return np.maximum((z * z).sum(1, keepdims=True) - 2 * z @ means.T + (means**2).sum(1), 0.0)


@register_with_banks("rmds")
class RMDS(Fitted):
    def __init__(self):
        pass

    def _fit(self, train: FeatureSet) -> None:
        x, labels = checked_features(train), np.asarray(train.labels)
        known_rows(self.name, train)
        _, means, cov = class_means_and_tied_covariance(x, labels)
        _, mean0, cov0 = class_means_and_tied_covariance(x, np.where(labels >= 0, 0, -1))
        self._class = whitened(means, cov)
        self._background = whitened(mean0, cov0)

    def _score(self, data: FeatureSet) -> np.ndarray:
        out = np.empty(len(data.labels))
        for rows in row_chunks(len(out)):
            x = features64(data, rows)
            (w, m), (w0, m0) = self._class, self._background
            out[rows] = -(squared_distances(x @ w, m) - squared_distances(x @ w0, m0)).min(axis=1)
        return out
