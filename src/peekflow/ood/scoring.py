"""Score files: fit one OOD detector, score several feature stores, write one HDF5 file.

Layout of `results/ood/<model>/scores/<method>.h5`: one float64 data set [N] per data set name (attribute `store`:
the feature store it came from), file attributes `method`, `settings` (JSON, defaults filled in), `layer`,
`fit_store` ("" when the method needs no fitting), `higher_is_id=True` and `complete=True`, written last. The file
is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import logging
import os

import h5py
import numpy as np

from peekflow.features.store import load_feature_set
from peekflow.io import atomic_path, open_complete_h5
from peekflow.ood.base import build

log = logging.getLogger("peekflow")


def score_stores(
    method: str,
    settings: dict | None,
    layer: str | None,
    fit_store: str | os.PathLike | None,
    eval_stores: dict[str, str | os.PathLike],
    out: str | os.PathLike,
) -> dict[str, np.ndarray]:
    """Fit `method` on `fit_store` (if it needs fitting), score every store in `eval_stores`, write `out`.

    `layer` is the model's penultimate layer (read only by detectors that use features). Returns the scores.
    """
    detector = build(method, settings)
    if not eval_stores:
        raise ValueError("score: no data sets to score (give at least one NAME=STORE)")
    for name in eval_stores:
        if not name or "/" in name:
            raise ValueError(f"score: data set name {name!r} must be non-empty and contain no '/'")
    feature_layer = None
    if detector.uses_features:
        if not layer:
            raise ValueError(f"OOD method {method!r} uses penultimate features: give the layer name (--layer)")
        feature_layer = layer
    if detector.needs_fit:
        if fit_store is None:
            raise ValueError(f"OOD method {method!r} must be fitted: give the ID training store (--fit-store)")
        detector.fit(load_feature_set(fit_store, feature_layer))
    elif fit_store is not None:
        log.warning("score: method %r needs no fitting; ignoring fit store %s", method, fit_store)
        fit_store = None

    scores = {}
    for name, path in eval_stores.items():
        data = load_feature_set(path, feature_layer, name=name)
        s = np.asarray(detector.score(data), dtype=np.float64)
        if s.shape != (len(data.labels),):
            n = len(data.labels)
            raise RuntimeError(f"{method}: scored {name!r} ({path}) into shape {s.shape}, expected ({n},)")
        bad = int(np.count_nonzero(~np.isfinite(s)))
        if bad:
            raise ValueError(f"{method}: {bad} non-finite score(s) for {name!r} ({path}); check the store's values")
        scores[name] = s
        log.info("%s: scored %s (%d samples, mean %.4g)", method, name, s.size, s.mean())

    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h5:
            for name, s in scores.items():
                h5.create_dataset(name, data=s).attrs["store"] = str(eval_stores[name])
            h5.attrs["method"] = method
            h5.attrs["settings"] = json.dumps(detector.settings(), sort_keys=True)
            h5.attrs["layer"] = feature_layer or ""
            h5.attrs["fit_store"] = str(fit_store) if fit_store is not None else ""
            h5.attrs["higher_is_id"] = True
            h5.attrs["complete"] = True
    return scores


def read_scores(path: str | os.PathLike, names: list[str]) -> dict[str, np.ndarray]:
    """Scores of data sets `names` from a score file; fail naming the file and data set if absent or incomplete."""
    with open_complete_h5(path, "score file", "rerun its scoring") as h5:
        if not bool(h5.attrs.get("higher_is_id", False)):
            raise ValueError(f"score file {path} does not declare higher_is_id=True")
        missing = [n for n in names if n not in h5]
        if missing:
            raise ValueError(f"score file {path} has no data set(s) {missing}; it has {sorted(h5.keys())}")
        return {n: h5[n][:].astype(np.float64) for n in names}
