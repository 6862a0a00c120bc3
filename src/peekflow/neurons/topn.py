"""Top-N images per channel: the rows of a feature store with the highest spatial-max activation (`maxact/<layer>`).

The store is streamed in blocks of rows, keeping only a running [C, N] best list, so memory is O(C*N + block*C)
whatever the number of images (ImageNet train: 1.28M x 2048 never sits in memory at once).

Order and ties: per channel, higher activation first; equal activations by the lower row index -- exactly
`np.argsort(-maxact, axis=0, kind="stable")[:N].T`, the brute force the tests compare against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import h5py
import numpy as np

from peekflow.features.store import STR, StoreError, open_store
from peekflow.io import atomic_path, open_complete_h5, plain_attrs
from peekflow.settings import Settings, setting

log = logging.getLogger("peekflow")

TIE_BREAK = "higher activation first; equal activations by lower row index"
RELEVANCE_METHODS = ("epsilon_plus_flat", "guided_backprop", "gradient")  # synthesis.relevance.METHODS (torch-free here)


@dataclass
class RankSettings(Settings):
    """How the top-N stage ranks (neurons.ranking); rank_by relevance: neurons/relevance_rank.py."""

    rank_by: str = setting("activation", "activation: the channel's spatial max (from the feature store); relevance: "
                           "its relevance to the explained class (Relevance Maximisation; runs the model)",
                           choices=("activation", "relevance"))
    relevance: str = setting("epsilon_plus_flat", "rank_by relevance: the relevance rule (zennit)",
                             choices=RELEVANCE_METHODS)
    explain: str = setting("predicted", "rank_by relevance: the class explained, the model's prediction or the "
                           "image's label", choices=("predicted", "label"))
    batch_size: int = setting(64, "rank_by relevance: images per forward and backward pass", minimum=1)


@dataclass
class TopN:
    indices: np.ndarray  # [C, N] int64 row indices into the source store
    activations: np.ndarray  # [C, N] float32 spatial-max activations, descending per channel
    paths: np.ndarray  # [C, N] image path of each row
    attrs: dict  # source store, layer, model, data set, preprocessing, n, rows


def merge_block(best_val: np.ndarray, best_idx: np.ndarray, block: np.ndarray, start: int, n: int):
    """Merge a block of rows (values [R, C], first row index `start`) into running best lists [C, w] (w <= n).

    The best lists hold lower row indices than the block and are sorted by (-value, index); a stable sort of their
    concatenation with the block (in row order) by -value therefore keeps every tie ordered by row index."""
    vals = np.ascontiguousarray(block.T)  # [C, R]
    if best_val.shape[1] == n:
        # only channels where some row beats the current N-th value can change (a tie loses to the lower index)
        rows = np.flatnonzero((vals > best_val[:, -1:]).any(axis=1))
        if rows.size == 0:
            return best_val, best_idx
        best_val[rows], best_idx[rows] = _top(best_val[rows], best_idx[rows], vals[rows], start, n)
        return best_val, best_idx
    return _top(best_val, best_idx, vals, start, n)


def _top(best_val, best_idx, vals, start, n, group: int = 64):
    """Stable top-n of [best | block] per channel, `group` channels at a time (keeps sort temporaries small)."""
    width = min(n, best_val.shape[1] + vals.shape[1])
    out_val = np.empty((len(vals), width), np.float32)
    out_idx = np.empty((len(vals), width), np.int64)
    for g in range(0, len(vals), group):
        sl = slice(g, g + group)
        idx = np.broadcast_to(np.arange(start, start + vals.shape[1], dtype=np.int64), vals[sl].shape)
        all_val = np.concatenate([best_val[sl], vals[sl]], axis=1)
        all_idx = np.concatenate([best_idx[sl], idx], axis=1)
        order = np.argsort(-all_val, axis=1, kind="stable")[:, :n]
        out_val[sl], out_idx[sl] = np.take_along_axis(all_val, order, 1), np.take_along_axis(all_idx, order, 1)
    return out_val, out_idx


def top_n(store_path, layer: str, n: int, block_rows: int = 4096) -> TopN:
    """Per channel of `layer`, the `n` store rows with the highest spatial max (fewer if the store has fewer rows)."""
    if n < 1 or block_rows < 1:
        raise ValueError(f"top-N: n ({n}) and block_rows ({block_rows}) must be positive")
    with open_store(store_path) as h5:
        key = f"maxact/{layer}"
        if key not in h5:
            have = sorted(h5["maxact"].keys()) if "maxact" in h5 else []
            raise StoreError(f"feature store {store_path} has no layer {layer!r} (no {key}); it has {have}")
        data = h5[key]
        rows, channels = data.shape
        if rows == 0:
            raise ValueError(f"feature store {store_path} holds no images")
        if n > rows:
            log.warning("top-N: n=%d but %s holds only %d images; keeping all %d", n, store_path, rows, rows)
            n = rows
        best_val = np.empty((channels, 0), np.float32)
        best_idx = np.empty((channels, 0), np.int64)
        for start in range(0, rows, block_rows):
            block = data[start:start + block_rows]
            if np.isnan(block).any():
                bad = start + int(np.flatnonzero(np.isnan(block).any(axis=1))[0])
                raise ValueError(f"feature store {store_path}: {key} holds NaN (first at row {bad})")
            best_val, best_idx = merge_block(best_val, best_idx, block, start, n)
        paths = _paths_of(h5["paths"], best_idx, block_rows)
        attrs = {
            "source_store": str(store_path),
            "layer": layer,
            "n": n,
            "rows": rows,
            "tie_break": TIE_BREAK,
            **{k: v for k, v in plain_attrs(h5).items()
               if k in ("model", "arch", "dataset", "images", "preprocessing", "checkpoint")},
        }
    return TopN(best_idx, best_val.astype(np.float32), paths, attrs)


def _paths_of(paths_ds: h5py.Dataset, indices: np.ndarray, block_rows: int) -> np.ndarray:
    """Paths of the given rows, read block by block (only blocks that hold a wanted row)."""
    wanted = np.unique(indices)
    found: dict[int, str] = {}
    for start in np.unique(wanted // block_rows) * block_rows:
        block = paths_ds[start:start + block_rows]
        for i in wanted[(wanted >= start) & (wanted < start + block_rows)]:
            p = block[i - start]
            found[int(i)] = p.decode() if isinstance(p, bytes) else str(p)
    return np.vectorize(found.__getitem__, otypes=[object])(indices)


def write_topn(path, result: TopN) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5["indices"] = result.indices
        h5["activations"] = result.activations
        h5.create_dataset("paths", data=result.paths.astype(object), dtype=STR)
        for key, value in result.attrs.items():
            h5.attrs[key] = value
        h5.attrs["complete"] = True


def read_topn(path) -> TopN:
    with open_complete_h5(path, "top-N file", "rerun `peekflow topn`") as h5:
        paths = np.vectorize(lambda p: p.decode() if isinstance(p, bytes) else p, otypes=[object])(h5["paths"][:])
        attrs = plain_attrs(h5, skip=("complete",))
        return TopN(h5["indices"][:], h5["activations"][:], paths, attrs)
