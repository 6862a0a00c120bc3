"""HDF5 feature store: one file per (model, data set), the contract between extraction and every later stage.

Layout (DESIGN.md): `logits` [N,K] float32, `labels` [N] int64 (-1 = not one of the model's classes), `paths` [N]
utf-8, `features/<layer>` [N,C] spatial mean, `maxact/<layer>` [N,C] spatial max, attributes describing model,
data set and preprocessing, and `complete=True` written last. The file is built under a temporary name and renamed,
so a killed job never leaves a store that looks whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from peekflow.io import IncompleteFileError, atomic_path, open_complete_h5

STR = h5py.string_dtype("utf-8")


class StoreError(IncompleteFileError):
    pass


class StoreWriter:
    """Preallocates every data set for `n` rows; rows are written batch by batch (memory stays O(batch))."""

    def __init__(self, path, n: int, num_classes: int, channels: dict[str, int], attrs: dict):
        self.path, self.n = Path(path), n
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self.h5 = h5py.File(tmp, "w")
        chunk = (max(1, min(n, 1024)),)
        # rows are resizable: skipped images (skip_corrupt) shrink the store at finish() instead of leaving gaps
        self.h5.create_dataset("logits", (n, num_classes), "float32", chunks=chunk + (num_classes,), maxshape=(None, num_classes))
        self.h5.create_dataset("labels", (n,), "int64", chunks=chunk, maxshape=(None,))
        self.h5.create_dataset("paths", (n,), STR, chunks=chunk, maxshape=(None,))
        for layer, c in channels.items():
            for group in ("features", "maxact"):
                # chunks of whole rows, so that per-channel readers (top-N) stream blocks of images
                self.h5.create_dataset(f"{group}/{layer}", (n, c), "float32", chunks=chunk + (c,), maxshape=(None, c))
        self._set_attrs(attrs)
        self.h5.attrs["complete"] = False

    def write(self, start: int, logits, labels, paths, features: dict, maxact: dict) -> None:
        stop = start + len(labels)
        self.h5["logits"][start:stop] = logits
        self.h5["labels"][start:stop] = labels
        self.h5["paths"][start:stop] = list(paths)
        for layer, values in features.items():
            self.h5[f"features/{layer}"][start:stop] = values
        for layer, values in maxact.items():
            self.h5[f"maxact/{layer}"][start:stop] = values

    def finish(self, extra_attrs: dict | None = None, n_rows: int | None = None) -> None:
        if n_rows is not None and n_rows != self.n:
            for name in self._row_datasets():
                self.h5[name].resize(n_rows, axis=0)
        self._set_attrs(extra_attrs or {})
        self.h5.attrs["complete"] = True
        self.h5.close()
        self._atomic.__exit__(None, None, None)

    def _set_attrs(self, attrs: dict) -> None:
        # scalars and strings as they are; lists and dicts as JSON text
        for key, value in attrs.items():
            plain = isinstance(value, (str, int, float, bool, np.ndarray))
            self.h5.attrs[key] = value if plain else json.dumps(value)

    def _row_datasets(self) -> list[str]:
        names = []
        self.h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return names

    def abort(self, exc) -> None:
        self.h5.close()
        self._atomic.__exit__(type(exc), exc, None)


def open_store(path) -> h5py.File:
    """Open a store for reading; fail naming the file if it is missing, unreadable or incomplete."""
    return open_complete_h5(path, "feature store", "rerun its extraction")


@dataclass
class FeatureSet:
    """What OOD detectors see of one store: logits, one layer's pooled features, labels and paths."""

    name: str
    logits: np.ndarray
    features: np.ndarray | None
    labels: np.ndarray
    paths: list[str] = field(repr=False)
    attrs: dict = field(default_factory=dict, repr=False)


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
            attrs={k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()},
        )


def store_paths(path) -> list[str]:
    with open_store(path) as h5:
        return [p.decode() if isinstance(p, bytes) else p for p in h5["paths"][:]]


def same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
