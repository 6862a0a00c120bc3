"""Mantel test: the correlation of two n x n distance (or similarity) matrices, and its permutation p-value.

r = Pearson (or Spearman: Pearson of the ranks) correlation of the matrices' entries: the upper triangle where both
are symmetric, every off-diagonal entry otherwise. The null relabels the objects of one matrix: rows and columns of
`b` permuted together (b[p][:, p]), seeded. p = (count + 1) / (permutations + 1), count = permuted r at least as
extreme as the observed one (two-sided: |r|; greater: r; less: -r), the observed one included as the "+1" (Mantel
1967; Legendre & Legendre, Numerical Ecology, 2012, 10.5.1). Where n! <= permutations every relabelling is enumerated
instead and p = count / n!, exact (the identity among them).

A relabelling only permutes the entries, so their mean and spread stay those of `b`: r of a relabelling is one dot
product with `a`'s standardised entries.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

ALTERNATIVES = ("two-sided", "greater", "less")
METHODS = ("pearson", "spearman")


@dataclass
class MantelResult:
    r: float  # correlation of the entries
    p: float  # permutation p-value
    permutations: int  # relabellings drawn (or all n! of them, where exact)
    exact: bool  # every relabelling enumerated
    n: int  # objects (matrix side)
    entries: int  # entries correlated (n(n-1)/2 symmetric, n(n-1) otherwise)
    method: str
    alternative: str
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def _entries_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a)
    if np.allclose(a, a.T) and np.allclose(b, b.T):
        return np.triu(np.ones((n, n), bool), 1)
    return ~np.eye(n, dtype=bool)


def _ranked(m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The entries' ranks in their places (mirrored where only the upper triangle is correlated)."""
    out = np.zeros_like(m)
    out[mask] = rankdata(m[mask])
    return out if mask[1, 0] else out + out.T


def _standardised(m: np.ndarray, mask: np.ndarray, what: str) -> np.ndarray:
    """m scaled so that the correlated entries have mean 0 and sum of squares 1; diagonal 0."""
    values = m[mask]
    spread = values.std()
    if not spread > 0:
        raise ValueError(f"Mantel test: the entries of {what} are all equal, their correlation is undefined")
    z = (m - values.mean()) / (spread * np.sqrt(values.size))
    np.fill_diagonal(z, 0.0)
    return z


def mantel(a, b, permutations: int = 999, seed: int = 0, method: str = "pearson",
           alternative: str = "two-sided") -> MantelResult:
    """Mantel test of square matrices `a` and `b` (same objects in the same order); see the module docstring."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != b.shape:
        raise ValueError(f"Mantel test: needs two square matrices of one size, got {a.shape} and {b.shape}")
    if len(a) < 3:
        raise ValueError(f"Mantel test: needs at least 3 objects, got {len(a)}")
    if method not in METHODS or alternative not in ALTERNATIVES:
        raise ValueError(f"Mantel test: method must be one of {METHODS}, alternative one of {ALTERNATIVES}; got "
                         f"{method!r}, {alternative!r}")
    if permutations < 1:
        raise ValueError(f"Mantel test: permutations must be >= 1, got {permutations}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("Mantel test: the matrices hold NaN or infinite entries")
    n, mask = len(a), _entries_mask(a, b)
    if method == "spearman":  # ranks of the entries; a relabelling permutes them, so ranking once suffices
        a, b = _ranked(a, mask), _ranked(b, mask)
    # x is zero outside the correlated entries, so r of relabelling p is <x, zb[p][:, p]>
    x = np.where(mask, _standardised(a, mask, "the first matrix"), 0.0)
    zb = _standardised(b, mask, "the second matrix")
    observed = float(np.vdot(x, zb))
    sign = {"two-sided": 0, "greater": 1, "less": -1}[alternative]
    exact = math.factorial(n) <= permutations
    if exact:
        orders = itertools.permutations(range(n))
    else:
        rng = np.random.default_rng(seed)
        orders = (rng.permutation(n) for _ in range(permutations))
    r = np.array([np.vdot(x, zb.take(order, 0).take(order, 1)) for order in orders])
    value, threshold = (np.abs(r), abs(observed)) if sign == 0 else (sign * r, sign * observed)
    count = int((value >= threshold - 1e-12).sum())  # an equal r (the identity, ties) counts
    p = count / len(r) if exact else (count + 1) / (permutations + 1)
    return MantelResult(observed, p, len(r), exact, n, int(mask.sum()), method, alternative, seed)
