"""GMM: class-conditional Gaussians with one full covariance each, a mixture weighted by class frequency (as in
pytorch-ood's GMM; cf. Lee, Lee, Lee & Shin, NeurIPS 2018, whose covariance is shared: peekflow's mahalanobis).

    mu_c, Sigma_c = mean and maximum-likelihood covariance of the fit rows of class c, + reg * I
    pi_c = N_c / N
    score(x) = log sum_c pi_c N(x; mu_c, Sigma_c)                  the mixture's log-likelihood

On the pooled penultimate features, in float64 (Cholesky factors); fitted on the labelled rows of the ID training
store or of a prototype bank (`_deepinversion` / `_deepdream`). `reg` 1e-6 (pytorch-ood's) keeps Sigma_c invertible
when a class has fewer rows than dimensions. Memory: K D x D factors (ImageNet ResNet-50: 1000 x 2048^2 x 8 bytes
= 34 GB). Higher = more ID (pytorch-ood's GMM returns minus the log-likelihood).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import logsumexp

from peekflow.features.store import FeatureSet
from peekflow.ood.base import checked_features, positive_number, register_with_banks
from peekflow.ood.posthoc import Fitted, features64, known_rows, row_chunks


@register_with_banks("gmm")
class GMM(Fitted):
    settings_help = {"reg": "added to every class covariance's diagonal"}

    def __init__(self, reg: float = 1e-6):
        self.reg = float(positive_number(reg, f"{self.name}: reg"))

    def _fit(self, train: FeatureSet) -> None:
        x, labels = checked_features(train), np.asarray(train.labels)
        rows = known_rows(self.name, train)
        self._classes = np.unique(labels[rows])
        self._means, self._factors, self._constants = [], [], []
        for c in self._classes:
            f = np.asarray(x[rows[labels[rows] == c]], dtype=np.float64)
            mean = f.mean(axis=0)
            cov = (f - mean).T @ (f - mean) / len(f) + self.reg * np.eye(x.shape[1])
            try:
                factor = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:
                raise ValueError(f"{self.name}: the covariance of class {c} in {train.name!r} is not positive "
                                 f"definite; raise reg (now {self.reg})") from None
            log_det = 2 * np.log(np.diag(factor)).sum()
            weight = len(f) / len(rows)
            self._means.append(mean)
            self._factors.append(factor)
            self._constants.append(np.log(weight) - 0.5 * (log_det + x.shape[1] * np.log(2 * np.pi)))

    def _score(self, data: FeatureSet) -> np.ndarray:
        out = np.empty(len(data.labels))
        for rows in row_chunks(len(out)):
            x = features64(data, rows)
            per_class = np.stack([const - 0.5 * (solve_triangular(l, (x - m).T, lower=True) ** 2).sum(axis=0)
                                  for m, l, const in zip(self._means, self._factors, self._constants)], axis=1)
            out[rows] = logsumexp(per_class, axis=1)
        return out
