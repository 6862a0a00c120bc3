"""ViM: virtual-logit matching (Wang, Li, Feng & Zhang, "ViM: Out-Of-Distribution with Virtual-logit Matching",
CVPR 2022).

    u = -pinv(W) b                                   the origin at which the logits vanish
    R = eigenvectors of the D - d smallest eigenvalues of cov(x - u) over the fit store    (the residual space)
    alpha = mean_fit max_k z_k / mean_fit ||(x - u) R||
    score(x) = log sum_k exp(z_k) - alpha * ||(x - u) R||          energy minus the virtual logit

On the pooled penultimate features with the store's last layer W, b; R and alpha are fitted on the ID training
store (all rows) or a prototype bank (`_deepinversion` / `_deepdream`). `dim` d, the principal space's dimension,
defaults to the paper's rule: 1000 if D >= 2048, 512 if D >= 768, else D / 2 (also whenever d >= D). cov is the
uncentred second moment of x - u (the paper's code). Higher = more ID (pytorch-ood's ViM returns minus the score).

A fit store of no more rows than d (or whose second moment has no more than rank d) lies inside the principal space:
what is left, the residual space, is rounding, and alpha divides by ~0 (the issue's 40-prototype banks in 128 dimensions
scored ~-2.6e7). Refused, naming the store, its rows, D and d, and what to do (more rows, or dim below the rows): before
any job where the config tells the size (prototype banks, generated sets; peekflow.workflow.preflight), else when
fitting. Precision: float64 throughout (residual norms too: a float32 product resolves the small residual only to ~1e-7
of ||x - u||).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.linalg.blas import dsyrk

from peekflow.features.store import FeatureSet
from peekflow.ood.base import FLOAT64, checked_features, positive_number, register_with_banks
from peekflow.ood.posthoc import Fitted, energy, features64, head_logits, last_layer, row_chunks

log = logging.getLogger("peekflow")


def principal_dim(dim: int | None, d: int) -> int:
    if dim is not None and dim < d:
        return dim
    return 1000 if d >= 2048 else 512 if d >= 768 else d // 2


def residual_space(method: str, train: FeatureSet, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(u [D], R [D, D-d]) of the fit store: the origin -pinv(W) b and the residual space's basis."""
    layer = last_layer(method, train)
    u = -np.linalg.pinv(layer.weight.astype(np.float64)) @ layer.bias
    x = checked_features(train)
    moment = np.zeros((x.shape[1], x.shape[1]), order="F")
    for rows in row_chunks(len(x)):  # chunk by chunk, centred in place: no float64 or centred copy of the bank
        centred = features64(train, rows)
        centred -= u
        # upper triangle of centred^T centred, added in place (BLAS syrk: half a full product's work). float64: the
        # residual space is the eigenvectors of the smallest eigenvalues, which a float32 sum would blur
        moment = dsyrk(1.0, centred.T, beta=1.0, c=moment, trans=0, overwrite_c=1)
    values, vectors = np.linalg.eigh(moment / len(x), UPLO="U")  # ascending eigenvalues
    d = principal_dim(dim, x.shape[1])
    log.info("%s: principal space of %d of %d dimensions", method, d, x.shape[1])
    rank = int((values > len(values) * np.finfo(np.float64).eps * max(values[-1], 0.0)).sum())
    if rank <= d:  # what lies outside the principal space is rounding: refused (before any job where sizes tell)
        why = inside_principal_space(len(x), rank, d, x.shape[1])
        raise ValueError(f"{method}: the fit store {train.name!r} has {why}")
    return u, vectors[:, : x.shape[1] - d]


def inside_principal_space(rows: int, rank: int, d: int, dims: int) -> str:
    """Why a fit store of `rows` rows (second moment of rank `rank`) in `dims` feature dimensions leaves ViM /
    Residual undetermined with a principal space of d dimensions, and what to do."""
    spread = f"{rows} rows" + (f" (of rank {rank})" if rank < rows else "") + f" in {dims} feature dimensions"
    remedy = f"fit on more than {d} rows" + (f", or set dim to at most {rank - 1}" if rank > 1 else "")
    return (f"{spread}, no more than the principal space's {d} dimensions: it lies inside that space, so its "
            f"residual space, and every score, is set by rounding; {remedy}")


def residual_norms(x: np.ndarray, u: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """||(x - u) R|| of the rows of a float64 chunk `x`, float64 [n]. float64: the residual is the small part of
    x - u, which a float32 product would resolve only to ~1e-7 of ||x - u||."""
    return np.linalg.norm((x - u) @ basis, axis=1)


@register_with_banks("vim")
class ViM(Fitted):
    precision = (FLOAT64 + " where the features' spread about u is >= 1e-2 of their norm; else ~1e-16 x (norm / "
                 "spread)^2, the float64 eigen-decomposition's (4e-8 at 1e-3)")
    needs_last_layer = True
    settings_help = {"dim": "dimension d of the principal space (null: the paper's rule; a list sweeps it)"}
    sweeps = ("dim",)

    def __init__(self, dim: int | None = None):
        self.dim = None if dim is None else int(positive_number(dim, f"{self.name}: dim", integer=True))

    def fit_size_problem(self, rows: int, class_rows: dict | None, dims: int) -> str | None:
        d = principal_dim(self.dim, dims)
        return inside_principal_space(rows, rows, d, dims) if rows <= d else None

    def _fit(self, train: FeatureSet) -> None:
        self._u, self._basis = residual_space(self.name, train, self.dim)
        layer, n = last_layer(self.name, train), len(train.labels)
        max_logit = residual = 0.0
        for rows in row_chunks(n):
            x = features64(train, rows)
            max_logit += head_logits(layer, x).max(axis=1).sum()
            residual += residual_norms(x, self._u, self._basis).sum()
        self._alpha = max_logit / residual

    def _score(self, data: FeatureSet) -> np.ndarray:
        layer, out = last_layer(self.name, data), np.empty(len(data.labels))
        for rows in row_chunks(len(out)):
            x = features64(data, rows)
            e = energy(head_logits(layer, x))
            out[rows] = e - self._alpha * residual_norms(x, self._u, self._basis)
        return out
