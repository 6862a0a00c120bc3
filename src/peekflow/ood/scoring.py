"""Score files: fit one OOD detector, score several feature stores (or, for methods that need the model, image
folders), write one HDF5 file; join the score files of one method on different data sets into one.

Layout of `results/ood/<model>/scores/<method>.h5`: one float64 data set [N] per data set name (attribute `store`:
the feature store it came from; `images` instead: the image folder, for `needs_images` methods), file attributes
`method`, `settings` (JSON, defaults filled in), `fitted` (JSON: what the fit chose where a setting left it to a
rule, e.g. ViM's dim; {} for most methods), `model` (the model of the scored stores, or the scoring model; the
figures' titles name it), `layer`, `fit_store` ("" when the method needs no fitting), `notes` (JSON list: the
warnings logged while fitting and scoring, e.g. a rank-deficient covariance, and the scored stores' own notes, e.g.
the crop of a timm model's default preprocessing; the table repeats them),
`higher_is_id=True` and `complete=True`, written last (`checkpoint` too for `needs_images` and `needs_model` methods).
The file is written under a temporary name and renamed.

The workflow scores one data set per job (`results/ood/<model>/scores/<method>/<dataset>.h5`, same layout), so an
added data set is scored without rescoring the others; `gather_scores` joins those parts into the file above after
checking that they come from the same method, settings, layer, fit store (and checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import h5py
import numpy as np

from peekflow.features.store import load_feature_set
from peekflow.io import atomic_path, open_complete_h5, plain_attrs
from peekflow.ood.base import Detector, build

log = logging.getLogger("peekflow")


def score_stores(
    method: str,
    settings: dict | None,
    layer: str | None,
    fit_store: str | os.PathLike | None,
    eval_stores: dict[str, str | os.PathLike],
    out: str | os.PathLike,
    model=None,
    checkpoint: str | os.PathLike = "",
) -> dict[str, np.ndarray]:
    """Fit `method` on `fit_store` (if it needs fitting) or on `model` (`needs_model` methods, whose `checkpoint` is
    recorded), score every store in `eval_stores`, write `out`.

    `layer` is the model's penultimate layer (read only by detectors that use features). Returns the scores.
    """
    detector = build(method, settings)
    if detector.needs_images:
        raise ValueError(f"OOD method {method!r} runs the model on images: give the model, its checkpoint and image "
                         "folders (--model, --checkpoint, --images NAME=FOLDER), not feature stores")
    _check_names(eval_stores, "STORE")
    feature_layer = None
    if detector.uses_features:
        if not layer:
            raise ValueError(f"OOD method {method!r} uses penultimate features: give the layer name (--layer)")
        feature_layer = layer
    if detector.needs_fit and fit_store is None:
        raise ValueError(f"OOD method {method!r} must be fitted: give the ID training store (--fit-store)")
    if detector.needs_model and model is None:
        raise ValueError(f"OOD method {method!r} derives its fit from the model: give --model and --checkpoint")

    scores = {}
    with warnings_noted() as notes:
        if detector.needs_model:
            detector.fit_model(model, feature_layer)
        if detector.needs_fit:
            detector.fit(load_feature_set(fit_store, feature_layer))
        elif fit_store is not None:
            log.warning("score: method %r needs no fitting; ignoring fit store %s", method, fit_store)
            fit_store = None
        models = []
        for name, path in eval_stores.items():
            data = load_feature_set(path, feature_layer, name=name)
            models.append(str(data.attrs.get("model", "")))
            notes += [note for note in json.loads(data.attrs.get("notes", "[]")) if note not in notes]
            scores[name] = _checked_scores(detector, detector.score(data), len(data.labels), name, path)
    _write(out, scores, {name: {"store": str(path)} for name, path in eval_stores.items()},
           {**_method_attrs(detector), "model": ", ".join(dict.fromkeys(m for m in models if m)),
            "layer": feature_layer or "",
            "fit_store": str(fit_store) if fit_store is not None else "", "notes": json.dumps(notes),
            **({"checkpoint": str(checkpoint)} if detector.needs_model else {})})
    return scores


def score_images(
    method: str,
    settings: dict | None,
    model,
    preprocessing,
    folders: dict[str, str | os.PathLike],
    device,
    out: str | os.PathLike,
    checkpoint: str | os.PathLike = "",
    model_name: str = "",
    model_notes: list[str] = (),
) -> dict[str, np.ndarray]:
    """Score the image folders `folders` (name -> <folder>/<class>/<image>) with a `needs_images` method (ODIN) and
    `model` (its `preprocessing`, on `device`); write `out` in the layout of `score_stores`, its notes starting with
    `model_notes` (what the feature stores of the model would record: ModelSpec.notes). Returns the scores."""
    from peekflow.data.folder import list_images  # imports torch: only here

    detector = build(method, settings)
    if not detector.needs_images:
        raise ValueError(f"OOD method {method!r} scores feature stores: give --eval NAME=STORE, not image folders")
    _check_names(folders, "FOLDER")
    scores = {}
    with warnings_noted() as notes:
        notes += list(model_notes)
        for name, folder in folders.items():
            s = detector.score_images(model, folder, preprocessing, device)
            scores[name] = _checked_scores(detector, s, len(list_images(folder)), name, folder)
    _write(out, scores, {name: {"images": str(folder)} for name, folder in folders.items()},
           {**_method_attrs(detector), "model": model_name, "layer": "", "fit_store": "", "checkpoint": str(checkpoint),
            "notes": json.dumps(notes)})
    return scores


class _NoteHandler(logging.Handler):
    def __init__(self, notes: list[str]):
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.notes:
            self.notes.append(message)


@contextlib.contextmanager
def warnings_noted():
    """The warnings peekflow logs inside the block (degenerate fits, small banks, ...), as a list of messages: the
    score file keeps them so that the table can show them beside its numbers, not only in a log."""
    notes: list[str] = []
    handler = _NoteHandler(notes)
    log.addHandler(handler)
    try:
        yield notes
    finally:
        log.removeHandler(handler)


def _check_names(inputs: dict, what: str) -> None:
    if not inputs:
        raise ValueError(f"score: no data sets to score (give at least one NAME={what})")
    for name in inputs:
        if not name or "/" in name:
            raise ValueError(f"score: data set name {name!r} must be non-empty and contain no '/'")


def _checked_scores(detector: Detector, scores, n: int, name: str, source) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise RuntimeError(f"{detector.name}: scored {name!r} ({source}) into shape {s.shape}, expected ({n},)")
    bad = int(np.count_nonzero(~np.isfinite(s)))
    if bad:
        raise ValueError(f"{detector.name}: {bad} non-finite score(s) for {name!r} ({source}); check its values")
    log.info("%s: scored %s (%d samples, mean %.4g)", detector.name, name, s.size, s.mean())
    return s


def _method_attrs(detector: Detector) -> dict:
    """The method, its settings and, once fitted, the settings its fit chose (`fitted`: e.g. ViM's effective dim)."""
    return {"method": detector.name, "settings": json.dumps(detector.settings(), sort_keys=True),
            "fitted": json.dumps(detector.fitted_settings(), sort_keys=True)}


def _write(out, scores: dict[str, np.ndarray], sources: dict[str, dict], attrs: dict) -> None:
    """Write a score file: `scores` (name -> [N]) with their `sources` attributes, then the file's `attrs`."""
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h5:
            for name, s in scores.items():
                h5.create_dataset(name, data=s).attrs.update(sources[name])
            h5.attrs.update(attrs)
            h5.attrs["higher_is_id"] = True
            h5.attrs["complete"] = True


def gather_scores(parts: list[str | os.PathLike], out: str | os.PathLike) -> dict[str, np.ndarray]:
    """Join score files of one method (`parts`, e.g. one per data set) into `out`. Every part must be complete and
    share the file attributes of the first (method, settings, layer, fit_store, checkpoint); a data set name may
    appear in one part only. Fails naming the part at fault; writes nothing then. Returns the scores."""
    if not parts:
        raise ValueError("gather-scores: no score files to join")
    scores: dict[str, np.ndarray] = {}
    sources: dict[str, dict] = {}
    origin: dict[str, str] = {}
    attrs: dict | None = None
    notes: list[str] = []
    for path in parts:
        with open_complete_h5(path, "score file", "rerun its scoring") as h5:
            these = plain_attrs(h5, skip=("complete",))
            notes += [n for n in json.loads(these.pop("notes", "[]")) if n not in notes]  # may differ per data set
            if not these.get("higher_is_id", False):
                raise ValueError(f"score file {path} does not declare higher_is_id=True")
            if attrs is None:
                attrs, first = these, path
            elif these != attrs:
                keys = sorted(k for k in set(these) | set(attrs) if these.get(k) != attrs.get(k))
                diff = "; ".join(f"{k}: {_shown(these, k)} here, {_shown(attrs, k)} there" for k in keys)
                raise ValueError(f"score file {path} does not match {first}, the first part ({diff})")
            for name, data in h5.items():
                if name in scores:
                    raise ValueError(f"score file {path} holds data set {name!r}, already given by {origin[name]}")
                scores[name] = data[:].astype(np.float64)
                sources[name] = plain_attrs(data)
                origin[name] = str(path)
    attrs.pop("higher_is_id")
    _write(out, scores, sources, {**attrs, "notes": json.dumps(notes)})
    log.info("gather-scores: %s, %d data set(s) from %d file(s)", out, len(scores), len(parts))
    return scores


def _shown(attrs: dict, key: str) -> str:
    return repr(attrs[key]) if key in attrs else "absent"


def read_notes(path: str | os.PathLike) -> list[str]:
    """The warnings a score file recorded (empty for files written before notes were kept)."""
    with open_complete_h5(path, "score file", "rerun its scoring") as h5:
        return list(json.loads(h5.attrs.get("notes", "[]")))


def read_scores(path: str | os.PathLike, names: list[str]) -> dict[str, np.ndarray]:
    """Scores of data sets `names` from a score file; fail naming the file and data set if absent or incomplete."""
    with open_complete_h5(path, "score file", "rerun its scoring") as h5:
        if not bool(h5.attrs.get("higher_is_id", False)):
            raise ValueError(f"score file {path} does not declare higher_is_id=True")
        missing = [n for n in names if n not in h5]
        if missing:
            raise ValueError(f"score file {path} has no data set(s) {missing}; it has {sorted(h5.keys())}")
        return {n: h5[n][:].astype(np.float64) for n in names}
