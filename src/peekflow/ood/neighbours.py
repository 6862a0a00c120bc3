"""Exact k-nearest-neighbour search among L2-normalised float32 vectors: a faiss and a torch backend.

Both rank by squared Euclidean distance ||q||^2 + ||b||^2 - 2 q.b (faiss's brute force computes the same), so they
find the same neighbours up to float32 ties. `kth_distance` then recomputes the distance to the k-th neighbour
exactly (float64; torch where its bank lives, so on CUDA only the distances come back), so the two backends' scores
agree to rounding.

Memory: the bank is never copied on the host. `normalise_rows_` scales it in place; faiss searches it in place
(`faiss.knn`, no index copy) and torch wraps it without copying (`torch.from_numpy`). Queries go in chunks of
`batch_size` rows, and the torch backend walks the bank in chunks (`_CHUNK_VALUES` distances on the CPU; on CUDA up
to `_GPU_CHUNK_VALUES`, bounded by free GPU memory), so the work arrays hold O(batch_size x bank_chunk) values. On a
GPU the bank lives once in GPU memory (faiss GpuIndexFlatL2 filled in chunks, or a torch CUDA tensor). faiss and
torch are imported only when a search is built.

The torch backend's chunk: one fused `addmm` gives ||b||^2 - 2 q.b (||q||^2, the same for a query's every row, is
added to the k winners only), and `smallest_k` picks each row's k smallest without a full top-k pass over the chunk
(a min over groups of `_GROUP` columns, then a top-k of the k best groups' entries); chunk winners are merged once per
work array's worth, with no host synchronisation inside the loop.
"""

from __future__ import annotations

import logging

import numpy as np

from peekflow.device import no_gpu_possible, torch_threads

log = logging.getLogger("peekflow")
BACKENDS = ("auto", "faiss", "torch")
GPU_MAX_K = 2048  # faiss GPU brute-force search supports k <= 2048
_CHUNK_VALUES = 1 << 24  # distances per torch work array on the CPU (64 MiB in float32)
_GPU_CHUNK_VALUES = 1 << 28  # on CUDA at most this many (1 GiB), and at most 1/8 of the free GPU memory
_GROUP = 32  # columns per group in smallest_k


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
    if not no_gpu_possible():  # else torch, which takes seconds to import, cannot see a GPU either
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
            # faiss (OpenMP) gets the same CPU threads as torch: peekflow.device.set_threads is the one knob
            self._faiss.omp_set_num_threads(torch_threads())
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
            if self.backend == "torch":  # where the bank lives: on CUDA only the distances come back
                out[start : start + len(q)] = self._torch_kth(q, k)
                continue
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
            dist, index = self._torch_search(qt, k)
            dist += (qt * qt).sum(1, keepdim=True)
            return dist.clamp_(min=0).cpu().numpy(), index.cpu().numpy()

    def _torch_kth(self, q: np.ndarray, k: int) -> np.ndarray:
        import torch

        with torch.inference_mode():
            qt = torch.from_numpy(q).to(self.device)
            kth = self._torch_search(qt, k)[1][:, -1]
            diff = qt.double() - self._bank_t[kth].double()
            return (diff * diff).sum(1).sqrt().cpu().numpy()

    def _torch_search(self, qt, k: int):
        """(||b||^2 - 2 q.b ascending, bank rows) of the k nearest rows of each query in `qt` (on self.device)."""
        import torch

        step = max(k, self._work_values() // max(len(qt), 1))
        step = max(k, step - step % _GROUP)  # whole groups (smallest_k)
        vals, idx, held = [], [], 0
        for start in range(0, len(self.bank), step):
            stop = min(start + step, len(self.bank))
            d = torch.addmm(self._bank_sq[start:stop], qt, self._bank_t[start:stop].T, alpha=-2)
            v, i = smallest_k(d, min(k, stop - start))
            vals.append(v)
            idx.append(i + start)
            held += v.shape[1]
            if held >= step and len(vals) > 1:  # merge: the winners never outgrow one work array
                v, pos = torch.topk(torch.cat(vals, 1), k, dim=1, largest=False, sorted=False)
                vals, idx, held = [v], [torch.gather(torch.cat(idx, 1), 1, pos)], k
        v, pos = torch.topk(torch.cat(vals, 1), k, dim=1, largest=False, sorted=True)
        return v, torch.gather(torch.cat(idx, 1), 1, pos)

    def _work_values(self) -> int:
        """Distances per work array: _CHUNK_VALUES on the CPU; on CUDA up to _GPU_CHUNK_VALUES, 1/8 of free memory."""
        if self.device.type != "cuda":
            return _CHUNK_VALUES
        import torch

        free = torch.cuda.mem_get_info(self.device)[0] + torch.cuda.memory_reserved(self.device) \
            - torch.cuda.memory_allocated(self.device)
        return int(max(_CHUNK_VALUES, min(_GPU_CHUNK_VALUES, free // 32)))


def smallest_k(d, k: int):
    """(values, column indices) of the k smallest entries of each row of `d` [n, c], in no order. Exact: the k
    smallest lie in the k groups (of _GROUP columns) with the smallest minima, so only those groups' entries (and the
    columns after the last whole group) are ranked; a narrow `d` is ranked whole."""
    import torch

    n, c = d.shape
    groups = c // _GROUP
    if groups < 4 * k:
        return torch.topk(d, k, dim=1, largest=False, sorted=False)
    whole = groups * _GROUP
    minima = d[:, :whole].view(n, groups, _GROUP).amin(2)
    best = torch.topk(minima, k, dim=1, largest=False, sorted=False).indices
    cols = (best.unsqueeze(2) * _GROUP + torch.arange(_GROUP, device=d.device)).reshape(n, k * _GROUP)
    if whole < c:
        cols = torch.cat([cols, torch.arange(whole, c, device=d.device).expand(n, -1)], 1)
    vals, pos = torch.topk(d.gather(1, cols), k, dim=1, largest=False, sorted=False)
    return vals, cols.gather(1, pos)
