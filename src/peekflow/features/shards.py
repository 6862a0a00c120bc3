"""Sharded extraction: shard i of S holds a contiguous range of a data set's sorted image list, and the merge joins
the shard stores into one store equal to an unsharded run's (same rows in the same order, same data sets, chunks and
attributes), copying block by block (memory O(block)).

Shards split the list between whole batches: each image is computed in the same batch as in an unsharded run, which
keeps the values bit for bit (a network's output for an image can change in the last bits with its batch)."""

from __future__ import annotations

import contextlib
import json

import h5py
import numpy as np

from peekflow.features.last_layer import LAST_LAYER, LastLayer
from peekflow.features.store import StoreError, StoreWriter, open_store
from peekflow.io import plain_attrs

SHARD_ATTR = "shard"  # JSON {"index": i, "count": S, "rows": [start, stop], "of": N}, in shard stores only
PER_STORE = {SHARD_ATTR, "complete", "n_rows", "skipped_paths"}  # attributes that differ between shards


def shard_rows(n: int, index: int, count: int, batch_size: int) -> tuple[int, int]:
    """Rows [start, stop) of shard `index` of `count`: batches [B*i//S, B*(i+1)//S) of the B batches of n rows."""
    batches = -(-n // batch_size)
    return batch_size * (batches * index // count), min(n, batch_size * (batches * (index + 1) // count))


def merge_shards(paths: list, out, block_bytes: int = 1 << 26) -> int:
    """Write the store `out` from the shard stores `paths` (in shard order); returns its row count."""
    with contextlib.ExitStack() as stack:
        shards = [stack.enter_context(open_store(p)) for p in paths]
        first = shards[0]
        names = datasets(first)
        last_layer = LastLayer.read(first)
        expected_start = 0
        for i, (path, h5) in enumerate(zip(paths, shards)):
            if SHARD_ATTR not in h5.attrs:
                raise StoreError(f"feature store {path} is not a shard (no {SHARD_ATTR!r} attribute)")
            shard = json.loads(h5.attrs[SHARD_ATTR])
            if (shard["index"], shard["count"], shard["rows"][0]) != (i, len(paths), expected_start):
                raise StoreError(f"feature store {path} is shard {shard['index']}/{shard['count']} of rows "
                                 f"{shard['rows']}, not shard {i}/{len(paths)} from row {expected_start}")
            expected_start = shard["rows"][1]
            differ = sorted(k for k in {*h5.attrs, *first.attrs} - PER_STORE
                            if not np.array_equal(h5.attrs.get(k), first.attrs.get(k)))
            if differ or datasets(h5) != names or not same_last_layer(LastLayer.read(h5), last_layer):
                raise StoreError(f"feature store {path} differs from {paths[0]} in {differ or 'its data sets'}")
        if expected_start != shard["of"]:
            raise StoreError(f"shards {paths} cover rows 0:{expected_start} of {shard['of']}")

        n = sum(h5["labels"].shape[0] for h5 in shards)
        attrs = plain_attrs(first, skip=PER_STORE)
        channels = {layer: first[f"features/{layer}"].shape[1] for layer in first["features"]}
        maps = {layer: first[f"maps/{layer}"].shape[1:] for layer in first.get("maps", {})}
        writer = StoreWriter(out, n, first["logits"].shape[1], channels, attrs, maps=maps, last_layer=last_layer)
        try:
            row = 0
            for h5 in shards:
                rows = h5["labels"].shape[0]
                for name in names:
                    source = h5[name].asstr() if h5[name].dtype.kind == "O" else h5[name]
                    step = max(1, block_bytes // (h5[name].dtype.itemsize * int(np.prod(h5[name].shape[1:]))))
                    for start in range(0, rows, step):
                        stop = min(start + step, rows)
                        writer.h5[name][row + start:row + stop] = source[start:stop]
                row += rows
            skipped = [p for h5 in shards for p in json.loads(h5.attrs["skipped_paths"])]
            writer.finish({"n_rows": n, "skipped_paths": skipped})
        except BaseException:
            writer.abort()
            raise
    return n


def datasets(h5: h5py.File) -> dict[str, tuple]:
    """Data set name -> (shape less rows, dtype), of the per-row data sets (not the last layer: one per store)."""
    found = {}
    h5.visititems(lambda name, obj: found.__setitem__(name, (obj.shape[1:], obj.dtype))
                  if isinstance(obj, h5py.Dataset) and not name.startswith(LAST_LAYER + "/") else None)
    return found


def same_last_layer(a: LastLayer | None, b: LastLayer | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.module, a.input) == (b.module, b.input) and np.array_equal(a.weight, b.weight) and \
        np.array_equal(a.bias, b.bias)
