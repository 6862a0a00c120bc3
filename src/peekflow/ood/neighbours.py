"""Exact k-nearest-neighbour search among L2-normalised float32 vectors: a faiss and a torch backend.

Both rank by squared Euclidean distance ||q||^2 + ||b||^2 - 2 q.b (faiss's brute force computes the same), so they
find the same neighbours up to float32 ties. `kth_distance` then recomputes the distance to the k-th neighbour
exactly (float64), so the two backends' scores agree to rounding.

Memory: the bank is never copied on the host. `normalise_rows_` scales it in place; faiss searches it in place
(`faiss.knn`, no index copy) and torch wraps it without copying (`torch.from_numpy`). Queries go in chunks of
`batch_size` rows, and the torch backend walks the bank in chunks, keeping a running top-k, so the work arrays hold
O(batch_size x (bank_chunk + k)) values. On a GPU the bank lives once in GPU memory (faiss GpuIndexFlatL2 filled in
chunks, or a torch CUDA tensor). faiss and torch are imported only when a search is built.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("peekflow")
BACKENDS = ("auto", "faiss", "torch")
GPU_MAX_K = 2048  # faiss GPU brute-force search supports k <= 2048
_CHUNK_VALUES = 1 << 24  # distances per torch work array (64 MiB in float32)


def normalise_rows_(x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Scale the rows of a float32 C-contiguous array to unit L2 norm in place, `chunk` rows at a time (no copy
    of the whole array); all-zero rows stay zero. Returns `x`."""
    if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable:
        raise ValueError("normalise_rows_ needs a writeable float32 C-contiguous array")
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        block /= np.maximum(norms, 1e-12).astype(np.float32)[:, None]
    return x


def squared_norms(x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Squared L2 norm of every row (float32), `chunk` rows at a time."""
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        out[start : start + len(block)] = np.einsum("ij,ij->i", block, block, dtype=np.float64)
    return out


def as_unit_rows(x, copy: bool = False) -> np.ndarray:
    """`x` as float32 C-contiguous rows of unit norm: in place when it already is float32, C-contiguous and writeable
    (and `copy` is False), else a normalised copy."""
    arr = np.asarray(x)
    if copy or arr.dtype != np.float32 or not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = np.array(arr, dtype=np.float32, order="C", copy=True)
    return normalise_rows_(arr)


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("the faiss KNN backend needs faiss: pip install 'peekflow[cpu]' or 'peekflow[gpu]', "
                          "or use backend: torch") from None
    return faiss


def faiss_available() -> bool:
    try:
        import_faiss()
    except ImportError:
        return False
    return True


def resolve_backend(name: str) -> str:
    """auto: faiss when it sees a GPU, else torch on CUDA, else faiss on the CPU if installed, else torch."""
    if name not in BACKENDS:
        raise ValueError(f"knn: backend {name!r} not in {list(BACKENDS)}")
    if name != "auto":
        return name
    if faiss_available() and import_faiss().get_num_gpus() > 0:
        return "faiss"
    import torch

    if torch.cuda.is_available():
        return "torch"
    return "faiss" if faiss_available() else "torch"


class NeighbourSearch:
    """Exact search of unit-norm queries among a unit-norm float32 `bank` [N, D] (held, not copied, on the host)."""

    def __init__(self, bank: np.ndarray, backend: str = "auto", batch_size: int = 4096):
        if bank.dtype != np.float32 or not bank.flags.c_contiguous or bank.ndim != 2:
            raise ValueError("NeighbourSearch needs a float32 C-contiguous [N, D] bank")
        self.bank, self.batch_size = bank, batch_size
        self.backend = resolve_backend(backend)
        self.where = "CPU"
        if self.backend == "faiss":
            self._faiss = import_faiss()
            import torch

            # faiss (OpenMP) gets the same CPU threads as torch: peekflow.device.set_threads is the one knob
            self._faiss.omp_set_num_threads(torch.get_num_threads())
            self._gpu_index = None
            if self._faiss.get_num_gpus() > 0:
                self._build_gpu_index()
        else:
            import torch

            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self._bank_t = torch.from_numpy(bank).to(self.device)  # shares memory on the CPU
            self._bank_sq = torch.from_numpy(squared_norms(bank)).to(self.device)
            self.where = self.device.type.upper()

    def _build_gpu_index(self) -> None:
        faiss = self._faiss
        self._gpu_res = faiss.StandardGpuResources()  # must live as long as the index
        self._gpu_index = faiss.GpuIndexFlatL2(self._gpu_res, self.bank.shape[1])
        for start in range(0, len(self.bank), 1 << 18):  # add in chunks: no second host copy of the bank
            self._gpu_index.add(self.bank[start : start + (1 << 18)])
        self.where = "GPU"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances [n, k] (ascending) and bank row indices [n, k] of each query's k nearest neighbours."""
        queries = self._checked(queries, k)
        dist = np.empty((len(queries), k), dtype=np.float32)
        index = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), self.batch_size):
            stop = min(start + self.batch_size, len(queries))
            dist[start:stop], index[start:stop] = self._search_chunk(queries[start:stop], k)
        return dist, index

    def kth_distance(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Euclidean distance (float64) of each query to its k-th nearest bank row, recomputed exactly from the
        neighbour that the search found."""
        queries = self._checked(queries, k)
        out = np.empty(len(queries), dtype=np.float64)
        for start in range(0, len(queries), self.batch_size):
            q = queries[start : start + self.batch_size]
            kth = self._search_chunk(q, k)[1][:, -1]
            diff = q.astype(np.float64) - self.bank[kth].astype(np.float64)
            out[start : start + len(q)] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        return out

    def _checked(self, queries: np.ndarray, k: int) -> np.ndarray:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.bank.shape[1]:
            raise ValueError(f"knn: queries have shape {queries.shape}, the bank {self.bank.shape[1]} channels")
        if not 1 <= k <= len(self.bank):
            raise ValueError(f"knn: k={k} must lie in [1, {len(self.bank)}] (the bank size)")
        return queries

    def _search_chunk(self, q: np.ndarray, k: int):
        if self.backend == "faiss":
            if self._gpu_index is not None and k <= GPU_MAX_K:
                return self._gpu_index.search(q, k)
            return self._faiss.knn(q, self.bank, k)
        return self._torch_chunk(q, k)

    def _torch_chunk(self, q: np.ndarray, k: int):
        import torch

        with torch.inference_mode():
            qt = torch.from_numpy(q).to(self.device)
            q_sq = (qt * qt).sum(1, keepdim=True)
            step = max(k, _CHUNK_VALUES // max(len(q), 1))
            best_d = best_i = None
            for start in range(0, len(self.bank), step):
                d = qt @ self._bank_t[start : start + step].T
                d.mul_(-2).add_(q_sq).add_(self._bank_sq[start : start + step])
                vals, idx = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
                idx += start
                if best_d is not None:  # merge with the running top-k
                    vals, pos = torch.topk(torch.cat([best_d, vals], 1), k, dim=1, largest=False)
                    idx = torch.gather(torch.cat([best_i, idx], 1), 1, pos)
                best_d, best_i = vals, idx
            return best_d.clamp_(min=0).cpu().numpy(), best_i.cpu().numpy()
