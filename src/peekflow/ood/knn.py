"""KNN: deep nearest neighbours (Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest
Neighbors", ICML 2022).

    z = f(x) / ||f(x)||_2                      penultimate (average-pooled) features, L2-normalised
    score(x) = -|| z - z_(k) ||_2              minus the Euclidean distance to the k-th nearest bank feature

The bank is the ID *training* store (`fit`), never the data being scored: `score` refuses queries sharing an image
path (after os.path.realpath) with the bank. Exact search with faiss IndexFlatL2 (on a GPU only when faiss has
one), queried in chunks of `batch_size` rows so memory stays bounded. Settings: `k` (default 50, the paper's choice
for CIFAR-10; 1000 for ImageNet at 100% of the bank), `batch_size` (default 4096). Higher = more ID.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import Detector, checked_features, positive_number, register

log = logging.getLogger("peekflow")
GPU_MAX_K = 2048  # faiss GPU brute-force search supports k <= 2048


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("the KNN detector needs faiss: pip install 'peekflow[cpu]' or 'peekflow[gpu]'") from None
    return faiss


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 C-contiguous (what faiss takes); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)  # float32 throughout: a bank can be millions of rows
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, np.float32(1e-12)))


def resolved_paths(paths) -> list[str]:
    """os.path.realpath of every non-empty path, resolving each folder once (banks can hold millions of rows)."""
    folders: dict[str, str] = {}
    out = []
    for p in paths:
        if not p:
            continue  # rows without an image file (e.g. synthetic prototypes) cannot overlap anything
        head, tail = os.path.split(os.path.abspath(p))
        if head not in folders:
            folders[head] = os.path.realpath(head)
        full = os.path.join(folders[head], tail)
        out.append(os.path.realpath(full) if os.path.islink(full) else full)
    return out


@register("knn")
class KNN(Detector):
    needs_fit = True
    uses_features = True

    def __init__(self, k: int = 50, batch_size: int = 4096):
        self.k = int(positive_number(k, "knn: k", integer=True))
        self.batch_size = int(positive_number(batch_size, "knn: batch_size", integer=True))
        self._index = None
        self._gpu = None  # keeps faiss GPU resources alive as long as the index

    def fit(self, train: FeatureSet) -> "KNN":
        bank = l2_normalise(checked_features(train))
        if self.k > len(bank):
            raise ValueError(f"knn: k={self.k} exceeds the bank size {len(bank)} of {train.name!r}")
        faiss = import_faiss()
        index = faiss.IndexFlatL2(bank.shape[1])
        if faiss.get_num_gpus() > 0 and self.k <= GPU_MAX_K:
            self._gpu = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu, 0, index)
        index.add(bank)
        self._index, self._bank_name = index, train.name
        self._bank_paths = set(resolved_paths(train.paths))
        log.info("knn: bank %r of %d x %d on %s", train.name, *bank.shape, "GPU" if self._gpu else "CPU")
        return self

    def _check_overlap(self, data: FeatureSet) -> None:
        shared = [p for p in resolved_paths(data.paths) if p in self._bank_paths]
        if shared:
            raise ValueError(
                f"knn: {len(shared)} image(s) of {data.name!r} are also in the reference bank {self._bank_name!r} "
                f"(first: {shared[:3]}); the bank must be the ID training store, disjoint from scored data"
            )

    def score(self, data: FeatureSet) -> np.ndarray:
        if self._index is None:
            raise RuntimeError("knn: call fit(train) with the ID training store before score()")
        self._check_overlap(data)
        queries = l2_normalise(checked_features(data))
        if queries.shape[1] != self._index.d:
            raise ValueError(f"knn: {data.name!r} has {queries.shape[1]} feature channels, the bank {self._index.d}")
        kth = np.empty(len(queries), dtype=np.float64)
        for start in range(0, len(queries), self.batch_size):
            squared, _ = self._index.search(queries[start : start + self.batch_size], self.k)
            kth[start : start + len(squared)] = squared[:, -1]
        return -np.sqrt(np.clip(kth, 0.0, None))
