"""HDF5 feature store: one file per (model, data set), the contract between extraction and every later stage.

Layout (DESIGN.md): `logits` [N,K] float32, `labels` [N] int64 (-1 = not one of the model's classes), `paths` [N]
utf-8, `features/<layer>` [N,C] spatial mean, `maxact/<layer>` [N,C] spatial max, optionally `maps/<layer>` [N,C,H,W]
float16 (whole spatial maps, only where extraction asks for them), optionally `last_layer/weight` [K,D] and
`last_layer/bias` [K] (the classifier's last layer, recorded only where extraction verified that it maps the pooled
features of layer `last_layer.attrs["input"]` to the stored logits; peekflow.features.last_layer), attributes
describing model, data set and preprocessing, and `complete=True` written last. The file is built under a temporary
name (io.temp_path) and renamed when whole, so a killed job never leaves a store that looks whole. (Extraction keeps
its finished batches apart, in a partial folder, and writes the store from them at the end: features.extract.)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from peekflow.features.last_layer import LAST_LAYER, LastLayer
from peekflow.io import IncompleteFileError, commit, open_complete_h5, plain_attrs, temp_path

STR = h5py.string_dtype("utf-8")


class StoreError(IncompleteFileError):
    pass


class StoreWriter:
    """Preallocates every data set for `n` rows; rows are written batch by batch (memory stays O(batch)); `finish`
    renames the whole store into place, `abort` deletes it."""

    def __init__(self, path, n: int, num_classes: int, channels: dict[str, int], attrs: dict,
                 maps: dict[str, tuple[int, int, int]] | None = None, last_layer: LastLayer | None = None):
        self.path, self.n = Path(path), n
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        self.h5 = h5py.File(self.tmp, "w")
        chunk = (max(1, min(n, 1024)),)
        # rows are resizable: skipped images (skip_corrupt) shrink the store at finish() instead of leaving gaps
        self.h5.create_dataset("logits", (n, num_classes), "float32", chunks=chunk + (num_classes,),
                               maxshape=(None, num_classes), dcpl=allocated_early())
        self.h5.create_dataset("labels", (n,), "int64", chunks=chunk, maxshape=(None,), dcpl=allocated_early())
        self.h5.create_dataset("paths", (n,), STR, chunks=chunk, maxshape=(None,))
        for layer, c in channels.items():
            for group in ("features", "maxact"):
                # chunks of whole rows, so that per-channel readers (top-N) stream blocks of images
                self.h5.create_dataset(f"{group}/{layer}", (n, c), "float32", chunks=chunk + (c,), maxshape=(None, c),
                                       dcpl=allocated_early())
        for layer, shape in (maps or {}).items():
            rows = max(1, min(n, (1 << 20) // (2 * int(np.prod(shape)))))  # ~1 MB chunks of whole rows
            self.h5.create_dataset(f"maps/{layer}", (n, *shape), "float16", chunks=(rows, *shape),
                                   maxshape=(None, *shape), dcpl=allocated_early())
        if last_layer is not None:
            last_layer.write(self.h5)
        self._set_attrs(attrs)
        self.h5.attrs["complete"] = False

    def write(self, start: int, logits, labels, paths, features: dict, maxact: dict, maps: dict | None = None) -> None:
        stop = start + len(labels)
        self.h5["logits"][start:stop] = logits
        self.h5["labels"][start:stop] = labels
        self.h5["paths"][start:stop] = list(paths)
        for layer, values in features.items():
            self.h5[f"features/{layer}"][start:stop] = values
        for layer, values in maxact.items():
            self.h5[f"maxact/{layer}"][start:stop] = values
        for layer, values in (maps or {}).items():
            self.h5[f"maps/{layer}"][start:stop] = values

    def finish(self, extra_attrs: dict | None = None, n_rows: int | None = None) -> None:
        if n_rows is not None and n_rows != self.n:
            for name in self._row_datasets():
                self.h5[name].resize(n_rows, axis=0)
        self._set_attrs(extra_attrs or {})
        self.h5.attrs["complete"] = True
        self.h5.close()
        commit(self.tmp, self.path)

    def _set_attrs(self, attrs: dict) -> None:
        # scalars and strings as they are; lists and dicts as JSON text
        for key, value in attrs.items():
            plain = isinstance(value, (str, int, float, bool, np.ndarray))
            self.h5.attrs[key] = value if plain else json.dumps(value)

    def _row_datasets(self) -> list[str]:
        names = []
        self.h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return [n for n in names if not n.startswith(LAST_LAYER + "/")]

    def abort(self) -> None:
        """Close and delete the unfinished store after a failure."""
        self.h5.close()
        self.tmp.unlink(missing_ok=True)


def allocated_early():
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def open_store(path) -> h5py.File:
    """Open a store for reading; fail naming the file if it is missing, unreadable or incomplete."""
    return open_complete_h5(path, "feature store", "rerun its extraction")


@dataclass
class FeatureSet:
    """What OOD detectors see of one store: logits, one layer's pooled features, labels and paths, and the
    classifier's last layer (`last_layer`: W [K,D], b [K]) where the store records it for that layer."""

    name: str
    logits: np.ndarray
    features: np.ndarray | None
    labels: np.ndarray
    paths: list[str] = field(repr=False)
    attrs: dict = field(default_factory=dict, repr=False)
    last_layer: LastLayer | None = field(default=None, repr=False)
    source: str = field(default="", repr=False)  # the store's path, for messages


def load_feature_set(path, layer: str | None = None, name: str | None = None) -> FeatureSet:
    """Read logits, labels, paths and (if `layer` is given) `features/<layer>` from a store."""
    with open_store(path) as h5:
        features = None
        if layer is not None:
            key = f"features/{layer}"
            if key not in h5:
                have = sorted(h5["features"].keys()) if "features" in h5 else []
                raise StoreError(f"feature store {path} has no layer {layer!r}; it has {have}")
            features = h5[key][:]
        return FeatureSet(
            name=name or Path(path).stem,
            logits=h5["logits"][:],
            features=features,
            labels=h5["labels"][:],
            paths=[p.decode() if isinstance(p, bytes) else p for p in h5["paths"][:]],
            attrs=plain_attrs(h5),
            last_layer=LastLayer.read(h5, layer) if layer is not None else None,
            source=str(path),
        )


def store_paths(path) -> list[str]:
    with open_store(path) as h5:
        return [p.decode() if isinstance(p, bytes) else p for p in h5["paths"][:]]


def same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
