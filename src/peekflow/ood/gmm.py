"""GMM: class-conditional Gaussians with one full covariance each, a mixture weighted by class frequency (as in
pytorch-ood's GMM; cf. Lee, Lee, Lee & Shin, NeurIPS 2018, whose covariance is shared: peekflow's mahalanobis).

    mu_c, Sigma_c = mean and maximum-likelihood covariance of the fit rows of class c, + reg * I
    pi_c = N_c / N
    score(x) = log sum_c pi_c N(x; mu_c, Sigma_c)                  the mixture's log-likelihood

On the pooled penultimate features, in float64; fitted on the labelled rows of the ID training store or of a
prototype bank (`_deepinversion` / `_deepdream`). `reg` 1e-6 (pytorch-ood's) keeps Sigma_c invertible when a class
has no more rows than dimensions: then its covariance is singular and reg alone sets the density off the span of
its rows (a documented variant, named in the table's notes). Such a class's factor comes from a QR of its centred rows
stacked on sqrt(reg) I, never from Sigma_c + reg I, whose rounding (~1e-16 x the largest eigenvalue) would swamp reg
there (1e-4 of reg for features 10^3 x the usual scale); it keeps ~1e-16 x sqrt(largest eigenvalue / reg).
Memory: K Cholesky factors, kept as packed lower triangles of D(D+1)/2 float64 values (ImageNet ResNet-50: 1000 x
2048 x 2049 / 2 x 8 bytes = 17 GB, 1.6 x its bank): the model, not the fitting, is what can outgrow the bank.
Fitting and scoring walk rows in chunks; the QR of a class of n <= D rows costs ~2.5 x its Cholesky route (both
O((n + D) D^2)). Higher = more ID (pytorch-ood's GMM returns minus the log-likelihood).
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
    precision = (FLOAT64 + " where sqrt(largest class eigenvalue / reg) < 1e6 (else ~1e-16 x it); a class of at most D"
                 " rows: reg off its span (named in the notes)")
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
        self._means, self._factors, self._constants = [], [], []
        for c, start, count in zip(self._classes, starts, counts):
            members = order[start : start + count]
            mean = sum(x[members[r]].sum(axis=0, dtype=np.float64) for r in row_chunks(count)) / count
            if count <= x.shape[1]:
                factor, log_det = self._stacked_qr(np.array(x[members], dtype=np.float64) - mean)
            else:
                factor, log_det = self._cholesky(x, members, mean, f"class {c} in {train.name!r}")
            self._means.append(mean)
            self._factors.append(factor)
            self._constants.append(np.log(count / len(rows)) - 0.5 * (log_det + x.shape[1] * np.log(2 * np.pi)))

    def _stacked_qr(self, deviations: np.ndarray) -> tuple[np.ndarray, float]:
        """(packed lower factor L with L L^T = the covariance + reg I, log det) of a class of n <= D rows: the R of a QR
        of [deviations / sqrt(n); sqrt(reg) I], so the covariance is never formed: its rounding (~1e-16 x its largest
        eigenvalue, 1e-4 of reg for features 10^3 x the usual scale) never meets reg off the span of the rows; the
        factor keeps ~1e-16 x sqrt(largest eigenvalue / reg) there."""
        dims = deviations.shape[1]
        stacked = np.concatenate([deviations / np.sqrt(len(deviations)), np.sqrt(self.reg) * np.eye(dims)])
        lower = np.linalg.qr(stacked, mode="r").T
        return dtrttp(lower, uplo="L")[0], float(2 * np.log(np.abs(np.diag(lower))).sum())

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
        for mean, packed, constant in zip(self._means, self._factors, self._constants):
            factor = dtpttr(len(mean), packed, uplo="L")[0]
            for rows in row_chunks(len(out)):
                x = features64(data, rows)
                x -= mean
                solved = solve_triangular(factor, x.T, lower=True, overwrite_b=True, check_finite=False)
                np.logaddexp(out[rows], constant - 0.5 * np.einsum("ij,ij->j", solved, solved), out=out[rows])
        return out
