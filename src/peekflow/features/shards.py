"""Sharded extraction: shard i of S holds a contiguous range of a data set's sorted image list, and the merge joins
the shard stores into one store equal to an unsharded run's (same rows in the same order, same data sets, chunks and
attributes), copying block by block (memory O(block)).

Shards split the list between whole batches (peekflow.shards.shard_rows): each image is computed in the same batch as
in an unsharded run, which keeps the values bit for bit (a network's output for an image can change in the last bits
with its batch)."""

from __future__ import annotations

import contextlib
import json

import h5py
import numpy as np

from peekflow.features.last_layer import LAST_LAYER, LastLayer
from peekflow.features.store import StoreError, StoreWriter, open_store
from peekflow.io import plain_attrs
from peekflow.shards import SHARD_KEY, check_shard_files

PER_STORE = {SHARD_KEY, "complete", "n_rows", "skipped_paths"}  # attributes that differ between shards


def merge_shards(paths: list, out, block_bytes: int = 1 << 26) -> int:
    """Write the store `out` from the shard stores `paths` (in shard order); returns its row count."""
    with contextlib.ExitStack() as stack:
        shards = [stack.enter_context(open_store(p)) for p in paths]
        first = shards[0]
        names = datasets(first)
        last_layer = LastLayer.read(first)
        check_shard_files(paths, [plain_attrs(h5, skip=PER_STORE - {SHARD_KEY}) for h5 in shards], "feature store")
        for path, h5 in zip(paths, shards):
            if datasets(h5) != names or not same_last_layer(LastLayer.read(h5), last_layer):
                raise StoreError(f"feature store {path} differs from {paths[0]} in its data sets")

        n = sum(h5["labels"].shape[0] for h5 in shards)
        attrs = plain_attrs(first, skip=PER_STORE)
        channels = {layer: first[f"features/{layer}"].shape[1] for layer in first["features"]}
        maps = {layer: first[f"maps/{layer}"].shape[1:] for layer in first.get("maps", {})}
        # created for every image of the data set, skipped ones included, and cut to the rows at the end, as a
        # one-job store is: the same chunks
        items = json.loads(first.attrs[SHARD_KEY])["of"]
        writer = StoreWriter(out, items, first["logits"].shape[1], channels, attrs, maps=maps, last_layer=last_layer)
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
            writer.finish({"n_rows": n, "skipped_paths": skipped}, n_rows=n)
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
