"""GMM: class-conditional Gaussians with one full covariance each, a mixture weighted by class frequency (as in
pytorch-ood's GMM; cf. Lee, Lee, Lee & Shin, NeurIPS 2018, whose covariance is shared: peekflow's mahalanobis).

    mu_c, Sigma_c = mean and maximum-likelihood covariance of the fit rows of class c, + reg * I
    pi_c = N_c / N
    score(x) = log sum_c pi_c N(x; mu_c, Sigma_c)                  the mixture's log-likelihood

On the pooled penultimate features, in float64 (Cholesky factors); fitted on the labelled rows of the ID training
store or of a prototype bank (`_deepinversion` / `_deepdream`). `reg` 1e-6 (pytorch-ood's) keeps Sigma_c invertible
when a class has fewer rows than dimensions. Memory: K Cholesky factors, kept as packed lower triangles of D(D+1)/2
float64 values (ImageNet ResNet-50: 1000 x 2048 x 2049 / 2 x 8 bytes = 17 GB, 1.6 x its bank): the model, not the
fitting, is what can outgrow the bank. Fitting and scoring walk rows in chunks. Higher = more ID (pytorch-ood's GMM
returns minus the log-likelihood).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dtpttr, dtrttp

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
        order = rows[np.argsort(labels[rows], kind="stable")]  # the labelled rows, class by class
        self._classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        self._means, self._factors, self._constants = [], [], []
        for c, start, count in zip(self._classes, starts, counts):
            members = order[start : start + count]
            mean = sum(x[members[r]].sum(axis=0, dtype=np.float64) for r in row_chunks(count)) / count
            cov = np.zeros((x.shape[1], x.shape[1]))
            for r in row_chunks(count):  # X^T X of the centred class rows, chunk by chunk
                f = np.array(x[members[r]], dtype=np.float64)
                f -= mean
                cov += f.T @ f
            cov = cov / count + self.reg * np.eye(x.shape[1])
            try:
                factor = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:
                raise ValueError(f"{self.name}: the covariance of class {c} in {train.name!r} is not positive "
                                 f"definite; raise reg (now {self.reg})") from None
            log_det = 2 * np.log(np.diag(factor)).sum()
            weight = count / len(rows)
            self._means.append(mean)
            self._factors.append(dtrttp(factor, uplo="L")[0])  # packed lower triangle: half of D x D
            self._constants.append(np.log(weight) - 0.5 * (log_det + x.shape[1] * np.log(2 * np.pi)))

    def _score(self, data: FeatureSet) -> np.ndarray:
        out = np.full(len(data.labels), -np.inf)  # log sum_c, accumulated class by class
        for mean, packed, constant in zip(self._means, self._factors, self._constants):
            factor = dtpttr(len(mean), packed, uplo="L")[0]
            for rows in row_chunks(len(out)):
                x = features64(data, rows)
                x -= mean
                solved = solve_triangular(factor, x.T, lower=True, overwrite_b=True, check_finite=False)
                np.logaddexp(out[rows], constant - 0.5 * np.einsum("ij,ij->j", solved, solved), out=out[rows])
        return out
