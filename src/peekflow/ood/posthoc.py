"""What the post-hoc detectors share: the fitted-detector base (fit store remembered, scored data checked disjoint
from it), the classifier's last layer with a clear error where a store lacks it, softmax / energy, and row chunks
(memory O(chunk x D) beside the stored arrays, whatever N).

Precision: stores hold float32; what a method computes from them is float64 (the logits of shaped features, means,
second moments, templates, softmax terms), and a confident row's 1 - p and log sum_k exp(z_k - max) come from the
other classes' sum (log_softmax_parts), never from 1 - p or log(1 + tiny), which cancel. Every score is float64.
Each method states what it guarantees (`precision`, docs/ood_methods.md)."""

from __future__ import annotations

import logging

import numpy as np
from scipy.special import logsumexp

from peekflow.features.last_layer import LastLayer
from peekflow.features.store import FeatureSet
from peekflow.ood.base import Detector, check_disjoint, checked_features, resolved_paths, stored_logits

log = logging.getLogger("peekflow")
CHUNK = 1024  # rows per work array: 1024 x D float64 is 2 MiB at D = 256, 16 MiB at D = 2048 (a 20k-row bank's 1/10)


def energy(z: np.ndarray) -> np.ndarray:
    """log sum_k exp(z_k), float64 [N] (the Energy score at T = 1)."""
    return logsumexp(np.asarray(z, dtype=np.float64), axis=1)


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def row_chunks(n: int, size: int | None = None):
    """slice objects covering rows 0..n in steps of `size` (default CHUNK, read at each call)."""
    size = size or CHUNK
    return (slice(start, min(start + size, n)) for start in range(0, n, size))


def last_layer(method: str, data: FeatureSet) -> LastLayer:
    """The store's last layer W, b for the loaded layer; fail naming the method, the store and what provides it."""
    if data.last_layer is None:
        raise ValueError(
            f"{method}: feature store {data.source or data.name!r} records no last layer (W, b) for its penultimate "
            "layer; re-extract it with this peekflow (rule extract_features), which records the nn.Linear that maps "
            "the penultimate layer's pooled features to the logits when it finds one")
    return data.last_layer


def log_softmax_parts(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log_p [n,K], log_q [n], predicted [n]) of logits z [n,K], all float64: log softmax(z), log(1 - p) of the
    predicted class (argmax_k z_k) and that class. Exact to float64 rounding whatever the margins: the total
    sum_k exp(z_k - max) = 1 + rest is taken as log1p(rest), and 1 - p_max as rest / (1 + rest), with rest the other
    classes' sum (a log-sum-exp about the second largest logit), so no 1 - p or log(1 + tiny) cancels and nothing
    underflows: relative error ~1e-16 x (1 + |margin|)."""
    z = np.array(z, dtype=np.float64)  # a fresh copy, shifted in place
    rows, predicted = np.arange(len(z)), z.argmax(axis=1)
    z -= z[rows, predicted][:, None]
    z[rows, predicted] = -np.inf  # the other classes
    second = z.max(axis=1, initial=-np.inf)
    finite = np.where(np.isfinite(second), second, 0.0)  # no other class (K = 1, or -inf logits): rest = 0
    with np.errstate(divide="ignore"):
        log_rest = finite + np.log(np.exp(z - finite[:, None]).sum(axis=1))
    z[rows, predicted] = 0.0
    log_total = np.log1p(np.exp(log_rest))
    z -= log_total[:, None]
    return z, log_rest - log_total, predicted


def column_mean(x: np.ndarray) -> np.ndarray:
    """Column means of `x` [N,D] in float64, chunk by chunk (a float64 copy of one chunk at a time): a float32 sum
    would lose a shared offset's digits (a feature of 10^3 +- 1 keeps only ~1e-4 of its spread)."""
    total = np.zeros(x.shape[1])
    for rows in row_chunks(len(x)):
        total += np.asarray(x[rows], dtype=np.float64).sum(axis=0)
    return total / len(x)


def head_logits(layer: LastLayer, x: np.ndarray, weight: np.ndarray | None = None,
                factor: np.ndarray | None = None) -> np.ndarray:
    """Logits float64 [n,K] of the rows `x`: factor * (x W^T) + b, in float64 (W, or `weight`), `factor` an optional
    per-row scale [n] (a row's scale commutes with the linear layer). float64: a float32 product errs by ~1e-7 x
    sum_j |x_j W_kj|, which a bias cancelling a shared offset of the features leaves as the logit's own size."""
    w = layer.weight if weight is None else weight
    z = np.asarray(x, dtype=np.float64) @ w.T.astype(np.float64)
    if factor is not None:
        z *= factor[:, None]
    return z + layer.bias


def features64(data: FeatureSet, rows: slice | None = None) -> np.ndarray:
    """A fresh float64 copy of the features of `rows` (free to modify in place)."""
    x = checked_features(data)
    return np.array(x if rows is None else x[rows], dtype=np.float64)


def logits64(data: FeatureSet, rows: slice) -> np.ndarray:
    """The logits of `rows` as a fresh float64 copy."""
    return np.array(stored_logits(data)[rows], dtype=np.float64)


def known_rows(method: str, train: FeatureSet) -> np.ndarray:
    """Indices of the labelled rows of the fit store; fail if it has none."""
    rows = np.flatnonzero(np.asarray(train.labels) >= 0)
    if not len(rows):
        raise ValueError(f"{method}: the fit store {train.name!r} has no class labels (all -1): it must be the "
                         "labelled ID training store or a prototype bank")
    return rows


class Fitted(Detector):
    """A detector fitted on one store (ID train or a prototype bank) that refuses to score images of that store.
    Subclasses implement `_fit(train)` and `_score(data)`."""

    needs_fit = True
    uses_features = True

    def fit(self, train: FeatureSet) -> "Fitted":
        self._fit(train)
        self._fit_name, self._fit_paths = train.name, resolved_paths(train.paths)
        log.info("%s: fitted on %r (%d rows)", self.name, train.name, len(train.labels))
        return self

    def score(self, data: FeatureSet) -> np.ndarray:
        if not hasattr(self, "_fit_paths"):
            raise RuntimeError(f"{self.name}: call fit(train) with the ID training store before score()")
        check_disjoint(self.name, self._fit_paths, self._fit_name, data)
        return self._score(data)

    def _fit(self, train: FeatureSet) -> None:
        raise NotImplementedError

    def _score(self, data: FeatureSet) -> np.ndarray:
        raise NotImplementedError


def head_energy(method: str, data: FeatureSet, shape=None, weight: np.ndarray | None = None) -> np.ndarray:
    """Energy (log-sum-exp) of the logits that the last layer (its weight, or `weight`) gives the features of
    `data` after `shape`, chunk by chunk; float64 [N]. `shape` maps a float64 chunk [n,D] (not to be modified) to
    shaped rows, or to (rows, factor [n]) when the shaping ends in a per-row scale (ASH-S, SCALE, ASH-B)."""
    layer = last_layer(method, data)
    n = len(checked_features(data))
    out = np.empty(n)
    for rows in row_chunks(n):
        x = features64(data, rows)
        shaped = x if shape is None else shape(x)
        x, factor = shaped if isinstance(shaped, tuple) else (shaped, None)
        out[rows] = energy(head_logits(layer, x, weight, factor))
    return out


def checked_percentile(value, what: str) -> float:
    """A percentile in [0, 100)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0 <= value < 100:
        raise ValueError(f"{what} must be a number in [0, 100), got {value!r}")
    return float(value)
