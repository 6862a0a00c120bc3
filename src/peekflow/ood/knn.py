"""KNN: deep nearest neighbours (Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest
Neighbors", ICML 2022), with a real or a data-free reference bank (PEEK, What Neural Networks Know).

    z = f(x) / ||f(x)||_2                      penultimate (average-pooled) features, L2-normalised
    score(x) = -|| z - z_(k) ||_2              minus the Euclidean distance to the k-th nearest bank feature

Methods (one row each in the OOD table), differing only in the bank `fit` gets:
  knn                the ID *training* store (never the data being scored: `score` refuses queries sharing an image
                     path, after os.path.realpath, with the bank)
  knn_deepinversion  features of DeepInversion prototypes (results/features/<model>/prototypes_deepinversion.h5)
  knn_deepdream      features of DeepDream prototypes (prototypes_deepdream.h5)
Settings: `k` (default 50, the paper's choice for CIFAR-10; 1000 for ImageNet with the full bank), `samples_per_class`
(default null = the whole bank; else that many rows per labelled class, drawn with `seed`), `backend` (faiss | torch |
auto, see peekflow.ood.neighbours: exact search either way, same scores), `batch_size` (query rows per chunk).
`fit` normalises the bank features in place (a bank can be millions of rows). Higher = more ID.
"""

from __future__ import annotations

import logging

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import (Detector, check_disjoint, checked_features, positive_number, register_with_banks,
                               resolved_paths)
from peekflow.ood.neighbours import BACKENDS, NeighbourSearch, as_unit_rows

log = logging.getLogger("peekflow")


def per_class_sample(labels: np.ndarray, n: int, seed: int, where: str) -> np.ndarray:
    """Sorted row indices: `n` rows of every labelled class (all of a smaller class), drawn with `seed`."""
    labels = np.asarray(labels)
    classes = np.unique(labels[labels >= 0])
    if not len(classes):
        raise ValueError(f"{where}: samples_per_class needs class labels, but every label is -1")
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if len(rows) < n:
            log.warning("%s: class %d has %d rows, fewer than samples_per_class=%d: taking all", where, c, len(rows), n)
        picked.append(rng.choice(rows, size=min(n, len(rows)), replace=False))
    return np.sort(np.concatenate(picked))


def too_few_for_k(k: int, rows: int, class_rows: dict | None, samples_per_class: int | None) -> str | None:
    """The size rule of the neighbour methods: a bank (after samples_per_class) of fewer than k rows."""
    if samples_per_class is not None and class_rows:
        rows = sum(min(n, samples_per_class) for n in class_rows.values())
    if k > rows:
        drawn = " (samples_per_class drawn)" if samples_per_class is not None and class_rows else ""
        return f"{rows} rows{drawn}, fewer than k={k}: choose k <= {rows} (or a larger bank)"
    return None


@register_with_banks("knn", doc="KNN on a data-free bank: the features of the target's {title} prototypes.")
class KNN(Detector):
    precision = ("float32 unit vectors and search (faiss's): absolute error <= 1e-6 of the k-th distance (in [0, 2]);"
                 " bank rows tied with the k-th to float32 resolution may swap")
    needs_fit = True
    uses_features = True
    settings_help = {"k": "the score is minus the distance to the k-th nearest bank feature (a list sweeps k)",
                     "samples_per_class": "bank of this many seeded rows per class (null: every row)",
                     "seed": "seed of those rows", "backend": "faiss, torch or auto (the same scores)",
                     "batch_size": "queries searched together"}
    sweeps = ("k",)

    gpu_helps = True  # the neighbour search runs on a GPU where the job has one (faiss-gpu, else torch)
    pairwise = True

    def __init__(self, k: int = 50, samples_per_class: int | None = None, seed: int = 0, backend: str = "auto",
                 batch_size: int = 4096):
        self.k = int(positive_number(k, f"{self.name}: k", integer=True))
        if samples_per_class is not None:
            samples_per_class = int(positive_number(samples_per_class, f"{self.name}: samples_per_class", integer=True))
        self.samples_per_class = samples_per_class
        self.seed = int(seed)
        if backend not in BACKENDS:
            raise ValueError(f"{self.name}: backend {backend!r} not in {list(BACKENDS)}")
        self.backend = backend
        self.batch_size = int(positive_number(batch_size, f"{self.name}: batch_size", integer=True))
        self._search = None

    def fit_size_problem(self, rows: int, class_rows: dict | None, dims: int) -> str | None:
        return too_few_for_k(self.k, rows, class_rows, self.samples_per_class)

    def fit(self, train: FeatureSet) -> "KNN":
        features = checked_features(train)
        paths = train.paths
        if self.samples_per_class is not None:
            rows = per_class_sample(train.labels, self.samples_per_class, self.seed, f"{self.name} bank {train.name!r}")
            features, paths = features[rows], [paths[i] for i in rows]
        if self.k > len(features):
            raise ValueError(f"{self.name}: k={self.k} exceeds the bank size {len(features)} of {train.name!r}: choose "
                             f"k <= {len(features)} (or a larger bank)")
        self._note_missing_classes(train, rows if self.samples_per_class is not None else None, len(features))
        self._search = NeighbourSearch(as_unit_rows(features), self.backend, self.batch_size)
        self._bank_name = train.name
        self._bank_paths = resolved_paths(paths)
        log.info("%s: bank %r of %d x %d, %s backend on %s", self.name, train.name, *features.shape,
                 self._search.backend, self._search.where)
        return self

    def _note_missing_classes(self, train: FeatureSet, rows, n_bank: int) -> None:
        """Warn when some of the model's classes have no point in the bank (their ID images look far from it)."""
        classes = np.asarray(train.logits).shape[1] if train.logits is not None else 0
        labels = np.asarray(train.labels) if rows is None else np.asarray(train.labels)[rows]
        if (labels >= 0).any():
            missing = np.setdiff1d(np.arange(classes), labels[labels >= 0])
            if len(missing):
                log.warning("%s: the bank %r has no rows of %d of the %d classes (e.g. class %s): their ID images "
                            "have no reference point", self.name, train.name, len(missing), classes,
                            ", ".join(map(str, missing[:5])))
        elif n_bank < classes:
            log.warning("%s: the bank %r has %d rows for %d classes: some classes have no reference point", self.name,
                        train.name, n_bank, classes)

    def score(self, data: FeatureSet) -> np.ndarray:
        if self._search is None:
            raise RuntimeError(f"{self.name}: call fit(train) with the reference bank before score()")
        check_disjoint(self.name, self._bank_paths, self._bank_name, data)
        queries = checked_features(data)
        if queries.shape[1] != self._search.bank.shape[1]:
            raise ValueError(f"{self.name}: {data.name!r} has {queries.shape[1]} feature channels, "
                             f"the bank {self._search.bank.shape[1]}")
        out = np.empty(len(queries), dtype=np.float64)
        for start in range(0, len(queries), self.batch_size):  # normalised copies of one chunk at a time
            chunk = as_unit_rows(queries[start : start + self.batch_size], copy=True)
            out[start : start + len(chunk)] = -self._search.kth_distance(chunk, self.k)
        return out
