"""GMM: class-conditional Gaussians with one full covariance each, a mixture weighted by class frequency (as in
pytorch-ood's GMM; cf. Lee, Lee, Lee & Shin, NeurIPS 2018, whose covariance is shared: peekflow's mahalanobis).

    mu_c, Sigma_c = mean and maximum-likelihood covariance of the fit rows of class c, + reg * I
    pi_c = N_c / N
    score(x) = log sum_c pi_c N(x; mu_c, Sigma_c)                  the mixture's log-likelihood

On the pooled penultimate features, in float64; fitted on the labelled rows of the ID training store or of a
prototype bank (`_deepinversion` / `_deepdream`). `reg` 1e-6 (pytorch-ood's) keeps Sigma_c invertible when a class
has no more rows than dimensions: then its covariance is singular and reg alone sets the density off the span of
its rows (a documented variant, named in the table's notes); such a class is kept as the singular vectors of its
centred rows, so those directions get exactly reg (a Cholesky factor of Sigma_c + reg I resolves them only to
~1e-16 x its largest eigenvalue, 1e-4 of reg for features 10^3 x the usual scale). Precision: float64, relative
error <= 1e-9 against 60-digit arithmetic (tested at 10^3 x scale, offsets and banks of fewer rows than dimensions).
Memory: K Cholesky factors, kept as packed lower triangles of D(D+1)/2 float64 values (ImageNet ResNet-50: 1000 x
2048 x 2049 / 2 x 8 bytes = 17 GB, 1.6 x its bank): the model, not the fitting, is what can outgrow the bank (a class
of n <= D rows keeps n x D values). Fitting and scoring walk rows in chunks. Higher = more ID (pytorch-ood's GMM
returns minus the log-likelihood).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dtpttr, dtrttp

from peekflow.features.store import FeatureSet
from peekflow.ood.base import FLOAT64, checked_features, positive_number, register_with_banks
from peekflow.ood.posthoc import Fitted, features64, known_rows, row_chunks

log = logging.getLogger("peekflow")


@register_with_banks("gmm")
class GMM(Fitted):
    precision = FLOAT64 + "; reg exactly, off the span of a class of at most D rows (named in the notes)"
    settings_help = {"reg": "added to every class covariance's diagonal"}

    def __init__(self, reg: float = 1e-6):
        self.reg = float(positive_number(reg, f"{self.name}: reg"))

    def _fit(self, train: FeatureSet) -> None:
        x, labels = checked_features(train), np.asarray(train.labels)
        rows = known_rows(self.name, train)
        order = rows[np.argsort(labels[rows], kind="stable")]  # the labelled rows, class by class
        self._classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        singular = counts <= x.shape[1]  # n rows span at most n - 1 directions about their mean
        if singular.any():
            log.warning("%s: %d of %d classes of %r have no more rows than the %d feature dimensions (fewest: %d): "
                        "their covariances are singular, and reg=%g on the diagonal sets the density off the span of "
                        "their rows", self.name, int(singular.sum()), len(counts), train.name, x.shape[1],
                        int(counts.min()), self.reg)
        self._means, self._models, self._constants = [], [], []
        for c, start, count in zip(self._classes, starts, counts):
            members = order[start : start + count]
            mean = sum(x[members[r]].sum(axis=0, dtype=np.float64) for r in row_chunks(count)) / count
            if count <= x.shape[1]:
                model, log_det = self._low_rank(np.array(x[members], dtype=np.float64) - mean)
            else:
                model, log_det = self._cholesky(x, members, mean, f"class {c} in {train.name!r}")
            self._means.append(mean)
            self._models.append(model)
            self._constants.append(np.log(count / len(rows)) - 0.5 * (log_det + x.shape[1] * np.log(2 * np.pi)))

    def _low_rank(self, deviations: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], float]:
        """((V^T, eigenvalues + reg), log det) of a class of n <= D rows from the singular vectors of its centred rows:
        the directions off their span have the eigenvalue reg exactly (a float64 covariance would put rounding of
        ~1e-16 x its largest eigenvalue there, beside reg)."""
        _, singular, vt = np.linalg.svd(deviations, full_matrices=False)
        values = singular**2 / len(deviations) + self.reg
        return (vt, values), float(np.log(values).sum() + (vt.shape[1] - len(values)) * np.log(self.reg))

    def _cholesky(self, x, members, mean, what: str) -> tuple[np.ndarray, float]:
        """(packed lower Cholesky factor of the covariance + reg I, log det), X^T X chunk by chunk."""
        cov = np.zeros((x.shape[1], x.shape[1]))
        for r in row_chunks(len(members)):
            f = np.array(x[members[r]], dtype=np.float64)
            f -= mean
            cov += f.T @ f
        try:
            factor = np.linalg.cholesky(cov / len(members) + self.reg * np.eye(x.shape[1]))
        except np.linalg.LinAlgError:
            raise ValueError(f"{self.name}: the covariance of {what} is not positive definite; raise reg (now "
                             f"{self.reg})") from None
        return dtrttp(factor, uplo="L")[0], float(2 * np.log(np.diag(factor)).sum())  # packed: half of D x D

    def _score(self, data: FeatureSet) -> np.ndarray:
        out = np.full(len(data.labels), -np.inf)  # log sum_c, accumulated class by class
        for mean, model, constant in zip(self._means, self._models, self._constants):
            factor = None if isinstance(model, tuple) else dtpttr(len(mean), model, uplo="L")[0]
            for rows in row_chunks(len(out)):
                x = features64(data, rows)
                x -= mean
                if factor is None:  # (x - mu)^T (V diag(values) V^T + reg (I - V V^T))^-1 (x - mu)
                    vt, values = model
                    along = x @ vt.T
                    x -= along @ vt
                    squared = (along**2 / values).sum(axis=1) + np.einsum("ij,ij->i", x, x) / self.reg
                else:
                    solved = solve_triangular(factor, x.T, lower=True, overwrite_b=True, check_finite=False)
                    squared = np.einsum("ij,ij->j", solved, solved)
                np.logaddexp(out[rows], constant - 0.5 * squared, out=out[rows])
        return out
