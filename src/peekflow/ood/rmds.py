"""RMDS: relative Mahalanobis distance (Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, "A Simple Fix to Mahalanobis
Distance for Improving Near-OOD Detection", arXiv 2106.09022, 2021).

    MD_k(x) = (x - mu_k)^T Sigma^+ (x - mu_k)      class means, shared covariance (as peekflow's mahalanobis)
    MD_0(x) = (x - mu_0)^T Sigma_0^+ (x - mu_0)    one Gaussian of every labelled fit row (the "background")
    score(x) = -min_k ( MD_k(x) - MD_0(x) )

Covariances are maximum-likelihood (divided by N), pseudo-inverted as mahalanobis' (a singular one: distances
within its span, named in the table's notes; one row per class refused), in float64 about the background mean.
Fitted on the labelled rows of the ID training store or of a prototype bank (`_deepinversion` / `_deepdream`).
Higher = more ID. pytorch-ood's RMD uses covariances *summed* over the rows (not divided by N) plus 1e-6 I, inverted,
and returns +min_k: peekflow's score is -N times it where the covariances are well conditioned (its ridge instead of
a pseudo-inverse decides the score where one is singular).
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import checked_features, register_with_banks
from peekflow.ood.mahalanobis import WITHIN_SPAN, class_means_and_tied_covariance, one_row_per_class, pinv_root
from peekflow.ood.posthoc import Fitted, features64, known_rows, row_chunks


def squared_distances(z: np.ndarray, means: np.ndarray) -> np.ndarray:
    """||z_i - m_c||^2 [n, C] in whitened coordinates."""
    return np.maximum((z * z).sum(1, keepdims=True) - 2 * z @ means.T + (means**2).sum(1), 0.0)


@register_with_banks("rmds")
class RMDS(Fitted):
    precision = WITHIN_SPAN

    def __init__(self):
        pass

    def fit_size_problem(self, rows: int, class_rows: dict | None, dims: int) -> str | None:
        return one_row_per_class(class_rows)

    def _fit(self, train: FeatureSet) -> None:
        x, labels = checked_features(train), np.asarray(train.labels)
        rows = len(known_rows(self.name, train))
        classes, means, cov = class_means_and_tied_covariance(x, labels)
        _, mean0, cov0 = class_means_and_tied_covariance(x, np.where(labels >= 0, 0, -1))
        self._centre = mean0[0]  # whitened about the background mean: no shared offset to cancel
        w = pinv_root(self.name, cov, train.name, rows, len(classes))
        w0 = pinv_root(self.name, cov0, train.name, rows, 1, "background covariance")
        self._class = w, (means - self._centre) @ w
        self._background = w0, np.zeros((1, w0.shape[1]))

    def _score(self, data: FeatureSet) -> np.ndarray:
        out = np.empty(len(data.labels))
        (w, m), (w0, m0) = self._class, self._background
        for rows in row_chunks(len(out)):
            x = features64(data, rows)
            x -= self._centre
            out[rows] = -(squared_distances(x @ w, m) - squared_distances(x @ w0, m0)).min(axis=1)
        return out
