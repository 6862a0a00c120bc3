"""PEEK's probing and DORA's neuron distances judged against WordNet.

Probing names unit u with a known class `named[u]`; its true class is `truth[u]`; both index one list of K classes
whose ClassSemantics (peekflow.semantics.hierarchy) hold the WordNet matrices.
- Accuracy at depth d: the share of units whose named and true class share a hypernym-or-self at depth >= min(d,
  depth(true)), i.e. lcs_depth[named, true] >= min(d, depth[true]). At d = 0 every unit counts (the root); from the
  true class's own depth on, only a unit named by that class or a class under it (PEEK's coarse labels at depth d,
  the class itself where it is shallower than d). Non-increasing in d.
- Mean WordNet distance (shortest path) between named and true class.
- Chance: the exact expected value when every unit names a class drawn uniformly from the K (`independent`, like an
  argmax that ignores the unit) or when the units get distinct classes, a uniformly random one-to-one assignment
  (`permutation`, like the Hungarian matching). Each unit's class is uniform over the K in both, so by linearity of
  expectation the two chance levels are equal; they differ only in spread.
- Mantel test of the probing similarity against WordNet similarity, over pairs of units: P[i, j] = similarity of
  unit i's prototypes to the true class of unit j, against wup[true i, true j].
DORA (Bykov et al. 2023, its evaluation): the Mantel test between the extreme-activation distance of the output units
(the classes) and their WordNet distance.
"""

from __future__ import annotations

import numpy as np

from peekflow.semantics.hierarchy import ClassSemantics
from peekflow.semantics.mantel import MantelResult, mantel

SCHEMES = ("independent", "permutation")


def _indices(values, k: int, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    if values.ndim != 1 or values.size == 0 or values.min() < 0 or values.max() >= k:
        raise ValueError(f"{what} must be class indices in [0, {k}), got {values!r}")
    return values


def depths(semantics: ClassSemantics, truth) -> np.ndarray:
    """The depths the accuracy curve runs over: 0 to the deepest true class."""
    truth = _indices(truth, len(semantics.synsets), "truth")
    return np.arange(int(semantics.depth[truth].max()) + 1)


def _shared(semantics: ClassSemantics, named: np.ndarray, truth: np.ndarray, d: np.ndarray) -> np.ndarray:
    """[units..., depths] whether named and true class share a hypernym at depth >= min(d, depth(true))."""
    need = np.minimum(d, semantics.depth[truth][..., None])
    return semantics.lcs_depth[named, truth][..., None] >= need


def accuracy_by_depth(semantics: ClassSemantics, named, truth, d=None) -> np.ndarray:
    """[len(d)] share of units named right at each depth d (default: depths(semantics, truth))."""
    k = len(semantics.synsets)
    named, truth = _indices(named, k, "named"), _indices(truth, k, "truth")
    if named.shape != truth.shape:
        raise ValueError(f"named and truth differ in length: {named.size} and {truth.size}")
    d = depths(semantics, truth) if d is None else np.asarray(d)
    return _shared(semantics, named, truth, d).mean(0)


def chance_accuracy_by_depth(semantics: ClassSemantics, truth, d=None, scheme: str = "independent") -> np.ndarray:
    """[len(d)] expected accuracy_by_depth of a random naming (`scheme`: independent or permutation, equal)."""
    k = len(semantics.synsets)
    truth = _indices(truth, k, "truth")
    _check_scheme(scheme, truth.size, k)
    d = depths(semantics, truth) if d is None else np.asarray(d)
    every = np.broadcast_to(np.arange(k)[:, None], (k, truth.size))  # [K, units]: each class named for each unit
    return _shared(semantics, every, np.broadcast_to(truth, (k, truth.size)), d).mean((0, 1))


def mean_distance(semantics: ClassSemantics, named, truth) -> float:
    """Mean WordNet distance (edges of the shortest path) between named and true class."""
    k = len(semantics.synsets)
    return float(semantics.distance[_indices(named, k, "named"), _indices(truth, k, "truth")].mean())


def chance_mean_distance(semantics: ClassSemantics, truth, scheme: str = "independent") -> float:
    """Expected mean_distance of a random naming (`scheme`: independent or permutation, equal)."""
    truth = _indices(truth, len(semantics.synsets), "truth")
    _check_scheme(scheme, truth.size, len(semantics.synsets))
    return float(semantics.distance[:, truth].mean())


def _check_scheme(scheme: str, units: int, k: int) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"chance scheme must be one of {SCHEMES}, got {scheme!r}")
    if scheme == "permutation" and units > k:
        raise ValueError(f"a one-to-one assignment needs at most {k} units, got {units}")


def probing_mantel(semantics: ClassSemantics, similarity, truth, permutations: int = 999, seed: int = 0,
                   method: str = "pearson", alternative: str = "two-sided") -> MantelResult:
    """Mantel test of probing similarity [units, K] (rows: units, columns: the K classes) against WordNet's
    Wu-Palmer similarity, over pairs of units (see the module docstring)."""
    similarity = np.asarray(similarity, np.float64)
    truth = _indices(truth, len(semantics.synsets), "truth")
    if similarity.shape != (truth.size, len(semantics.synsets)):
        raise ValueError(f"probing similarity must be [units, classes] = {(truth.size, len(semantics.synsets))}, "
                         f"got {similarity.shape}")
    return mantel(similarity[:, truth], semantics.wup[np.ix_(truth, truth)], permutations, seed, method,
                  alternative)


def dora_mantel(semantics: ClassSemantics, ea_distance, units, permutations: int = 999, seed: int = 0,
                method: str = "pearson", alternative: str = "two-sided") -> MantelResult:
    """DORA's evaluation: Mantel test of the EA distance of output units [U, U] (peekflow.neurons.dora.ea_distance,
    rows in the order of `units`, the class index of each) against their WordNet distance (shortest path)."""
    units = _indices(units, len(semantics.synsets), "units")
    return mantel(ea_distance, semantics.distance[np.ix_(units, units)], permutations, seed, method, alternative)


def probing_report(semantics: ClassSemantics, named, truth) -> dict:
    """Accuracy by depth and mean distance with their chance levels (the same for both schemes), as plain values."""
    d = depths(semantics, truth)
    return {"depths": d.tolist(),
            "accuracy_by_depth": accuracy_by_depth(semantics, named, truth, d).tolist(),
            "chance_accuracy_by_depth": chance_accuracy_by_depth(semantics, truth, d).tolist(),
            "mean_distance": mean_distance(semantics, named, truth),
            "chance_mean_distance": chance_mean_distance(semantics, truth)}
