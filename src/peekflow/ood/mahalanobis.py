"""Mahalanobis: class-conditional Gaussians with a shared covariance (Lee, Lee, Lee & Shin, "A Simple Unified
Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018), on the penultimate
features, without the paper's input perturbation and layer ensemble (as in PEEK's and OpenOOD's tables).

    mu_c  = mean of the ID training features of class c
    Sigma = (1/N) sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T     tied (shared) covariance, maximum likelihood
    score(x) = -min_c (x - mu_c)^T Sigma^+ (x - mu_c)             Sigma^+: pseudo-inverse

Fitted on the labelled rows of the ID training store (labels -1 are left out). Computed in float64 in whitened
coordinates about the classes' centre c (Sigma^+ = W W^T from an eigen-decomposition, z = (x - c) W, so the expansion
of ||z - m||^2 cancels no shared offset), queries in chunks of `batch_size`. Higher = more ID.
`mahalanobis_deepinversion` / `mahalanobis_deepdream` fit on the features of the target's prototypes instead.

A singular Sigma (fewer than D + C labelled rows, e.g. 40 prototypes of 10 classes in 128 dimensions: rank 30; or
dead units) runs a documented variant: distances within its span (Sigma^+ ignores directions without spread; a ridge
would instead weigh them by 1 / ridge), named in the table's notes. Rank: the eigenvalues above D x eps x the largest
(numpy.linalg.matrix_rank's tolerance), so no rounding-level eigenvalue is inverted. One row per class (Sigma = 0,
every score equal) is refused, before any job where the config tells the bank's classes.
"""

from __future__ import annotations

import logging

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import (FLOAT64, Detector, check_disjoint, checked_features, positive_number,
                               register_with_banks, resolved_paths)
from peekflow.ood.posthoc import row_chunks

log = logging.getLogger("peekflow")
WITHIN_SPAN = FLOAT64 + "; a singular covariance: distances within its span (pseudo-inverse, named in the notes)"


def class_means_and_tied_covariance(x: np.ndarray, labels: np.ndarray, chunk: int | None = None,
                                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes, means [C,D], shared covariance [D,D]) of the rows of `x` with labels >= 0, in float64. Two passes
    over `chunk` rows (default peekflow.ood.posthoc.CHUNK) at a time: class sums accumulated by index, then the
    centred chunk's X^T X. Memory is O(chunk * D + D^2) beside `x`: no float64 or centred copy of the bank, nor of a
    class."""
    labels = np.asarray(labels)
    known = labels >= 0
    classes, counts = np.unique(labels[known], return_counts=True)
    index = np.searchsorted(classes, labels)  # class index of every labelled row

    def labelled(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        keep = known[rows]
        f, i = np.array(x[rows], dtype=np.float64), index[rows]
        return (f, i) if keep.all() else (f[keep], i[keep])

    sums = np.zeros((len(classes), x.shape[1]))
    for rows in row_chunks(len(x), chunk):
        f, i = labelled(rows)
        np.add.at(sums, i, f)
    means = sums / counts[:, None]
    cov = np.zeros((x.shape[1], x.shape[1]))
    for rows in row_chunks(len(x), chunk):
        f, i = labelled(rows)
        f -= means[i]
        cov += f.T @ f
    return classes, means, cov / counts.sum()


def pinv_root(method: str, cov: np.ndarray, fit: str, rows: int, classes: int, what: str = "covariance"
              ) -> np.ndarray:
    """W with W W^T = pinv(cov), in float64 from an eigen-decomposition. Numerical rank: the eigenvalues above
    D x eps x the largest (numpy.linalg.matrix_rank's tolerance; below it an eigenvalue is rounding). A rank below D
    (fewer than D + `classes` rows of the fit store `fit`, or dead units) is named (a warning: the table's notes);
    rank 0 (every row its class mean) is refused: every score would be equal."""
    values, vectors = np.linalg.eigh(cov)
    keep = values > len(values) * np.finfo(np.float64).eps * max(values.max(), 0.0)
    rank, dims = int(keep.sum()), len(values)
    if rank == 0:
        raise ValueError(f"{method}: the {what} of {fit!r} has rank 0 ({rows} rows, {classes} classes: every row is "
                         "its class mean): every score would be equal; fit on more than one image per class")
    if rank < dims:
        sizes = f"{rows} rows" + (f", {classes} classes" if classes > 1 else "")
        log.warning("%s: %s rank %d of %d feature dimensions (%s: at least %d rows are needed for full rank); "
                    "distances are measured only within its %d-dim span", method, what, rank, dims, sizes,
                    dims + classes, rank)
    return vectors[:, keep] / np.sqrt(values[keep])


def one_row_per_class(class_rows: dict | None) -> str | None:
    """The size rule of the tied-covariance methods: with one row in every class the covariance is 0 (refused)."""
    if class_rows and max(class_rows.values()) == 1:
        return (f"one row in each of its {len(class_rows)} classes: every row is its class mean, so the covariance "
                "is 0 and every score would be equal; fit on more than one image per class")
    return None


@register_with_banks("mahalanobis")
class Mahalanobis(Detector):
    precision = WITHIN_SPAN
    needs_fit = True
    uses_features = True
    settings_help = {"batch_size": "rows scored together"}

    def __init__(self, batch_size: int = 4096):
        self.batch_size = int(positive_number(batch_size, f"{self.name}: batch_size", integer=True))
        self._whitened_means = None

    def fit_size_problem(self, rows: int, class_rows: dict | None, dims: int) -> str | None:
        return one_row_per_class(class_rows)

    def fit(self, train: FeatureSet) -> "Mahalanobis":
        labels = np.asarray(train.labels)
        known = labels >= 0
        if not known.any():
            raise ValueError(f"{self.name}: the fit store {train.name!r} has no class labels (all -1): it must be "
                             "the labelled ID training store")
        x = checked_features(train)
        classes, means, cov = class_means_and_tied_covariance(x, labels)
        self._w = pinv_root(self.name, cov, train.name, int(known.sum()), len(classes))
        self._centre = means.mean(axis=0)  # whitened about the classes' centre: no shared offset to cancel
        self._whitened_means = (means - self._centre) @ self._w
        self._means_sq = (self._whitened_means**2).sum(1)
        self._fit_name, self._fit_paths = train.name, resolved_paths(train.paths)
        log.info("%s: %d classes, %d x %d features of %r, covariance rank %d", self.name, len(classes),
                 int(known.sum()), x.shape[1], train.name, self._w.shape[1])
        return self

    def score(self, data: FeatureSet) -> np.ndarray:
        if self._whitened_means is None:
            raise RuntimeError(f"{self.name}: call fit(train) with the ID training store before score()")
        check_disjoint(self.name, self._fit_paths, self._fit_name, data)
        x = checked_features(data)
        if x.shape[1] != self._w.shape[0]:
            raise ValueError(f"{self.name}: {data.name!r} has {x.shape[1]} feature channels, the fit store "
                             f"{self._w.shape[0]}")
        out = np.empty(len(x), dtype=np.float64)
        for start in range(0, len(x), self.batch_size):
            z = (np.asarray(x[start : start + self.batch_size], dtype=np.float64) - self._centre) @ self._w
            # ||z - m_c||^2 for every class at once (about the classes' centre: the expansion cancels no offset)
            squared = np.einsum("ij,ij->i", z, z)[:, None] - 2 * z @ self._whitened_means.T + self._means_sq
            out[start : start + len(z)] = -np.maximum(squared.min(axis=1), 0.0)
        return out
