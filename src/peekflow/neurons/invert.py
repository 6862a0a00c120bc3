"""INVERT concept labels (Bykov et al., "Labeling Neural Representations with Inverse Recognition", NeurIPS 2023).

A neuron's label is the boolean formula over image concepts whose truth best ranks the neuron's activations:

    AUC(f) = P(a(x) > a(x') | f(x), not f(x'))      (ties count 1/2; = sklearn's roc_auc_score(f, a))

- concepts: every value of a categorical column of attributes.csv, as `column=value` (e.g. `colour=red`); a numeric
  column counts as categorical when it holds at most MAX_NUMERIC_VALUES distinct values (a digit class 0-9, a
  count), else it is a measurement (a rotation angle) and is left out, with a log line naming it; literals
  are the concepts and their negations `NOT column=value`; a concept whose images equal an earlier one's (the shapes
  set's `shape=circle` and `class=circle`) is kept once, under the earlier column's name
- beam search: length 1 = every literal; each further step extends every formula of the beam by `AND literal` or
  `OR literal` (left-deep: `(a OR b) AND NOT c`); only formulas true on a share of the images in
  [min_fraction, max_fraction] count; the beam keeps the `beam_size` best by AUC (ties: the shorter formula); the
  label is the best formula of length <= max_length seen
- AUC of many candidate formulas at once from the activations' ranks (the Mann-Whitney form
  (sum of positives' ranks - P(P+1)/2) / (P(N-P))); the reported AUC is recomputed with roc_auc_score and the
  p-value is scipy's one-sided Mann-Whitney U (activations of images where the formula holds greater)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from peekflow.features.store import open_store
from peekflow.settings import Settings, setting

log = logging.getLogger("peekflow")

SKIPPED_COLUMNS = ("path", "split")
MAX_NUMERIC_VALUES = 32  # a numeric column with more distinct values is a measurement, not a concept


@dataclass
class InvertSettings(Settings):
    source: str = setting("features", "the store's activations: features (spatial mean) or maxact (spatial max)",
                          choices=["features", "maxact"])
    neurons: str | list[int] = setting("all", '"all" or a list of channel indices', choices=["all"])
    columns: list[str] | None = setting(None, "attribute columns used (null: every column but path, split and "
                                              "numeric measurements; docs/attributes.md)")
    beam_size: int = setting(5, "formulas kept per beam-search step", minimum=1)
    max_length: int = setting(3, "most literals per formula", minimum=1)
    min_fraction: float = setting(0.05, "least share of the images a formula may hold for", minimum=0, maximum=1)
    max_fraction: float = setting(0.5, "largest share of the images a formula may hold for", minimum=0, maximum=1)
    negation: bool = setting(True, "allow NOT literals")

    def __post_init__(self):
        super().__post_init__()
        if not self.min_fraction < self.max_fraction:
            raise ValueError(f"need min_fraction < max_fraction, got {self.min_fraction}, {self.max_fraction}")


@dataclass
class Concepts:
    names: list[str]  # `column=value`
    masks: np.ndarray  # [K, N] bool, one row per concept, images in activation order


@dataclass
class Label:
    formula: str
    mask: np.ndarray  # [N] bool
    length: int
    auc: float


def concepts_from_attributes(table: pd.DataFrame, columns: list | None = None,
                             where: str = "the attributes table") -> Concepts:
    if columns is None:
        columns = [c for c in table.columns if c not in SKIPPED_COLUMNS]
        measured = {c: table[c].nunique() for c in columns if pd.api.types.is_numeric_dtype(table[c])
                    and table[c].nunique() > MAX_NUMERIC_VALUES}
        if measured:
            log.info("INVERT: numeric column(s) of %s left out, more than %d distinct values each (measurements, not "
                     "concepts): %s; name them in `columns` to use every value", where, MAX_NUMERIC_VALUES,
                     ", ".join(f"{c} ({n})" for c, n in measured.items()))
        columns = [c for c in columns if c not in measured]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"attribute column(s) {missing} not in {where}; it has {list(table.columns)}")
    names, masks, seen = [], [], set()
    for column in columns:
        values = table[column].astype(str)
        for value in sorted(values.unique()):
            mask = (values == value).to_numpy()
            key = np.packbits(mask).tobytes()
            if mask.all() or key in seen:
                continue
            seen.add(key)
            names.append(f"{column}={value}")
            masks.append(mask)
    if not names:
        raise ValueError(f"no concepts: columns {columns} of {where} hold no value that varies across the images")
    return Concepts(names, np.stack(masks))


def auc_from_ranks(masks: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """AUC of the activations (given by their ranks [N]) for each boolean mask [M, N] (Mann-Whitney form)."""
    masks = np.atleast_2d(masks)
    pos = masks.sum(1).astype(np.float64)
    neg = masks.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return (masks.astype(np.float64) @ ranks - pos * (pos + 1) / 2) / (pos * neg)


def _join(formula: str, length: int, op: str, literal: str) -> str:
    return f"({formula}) {op} {literal}" if length > 1 else f"{formula} {op} {literal}"


def beam_search(activations: np.ndarray, concepts: Concepts, s: InvertSettings) -> Label:
    """The best formula for one neuron's activations [N] (see the module doc)."""
    from scipy.stats import rankdata  # here, as scipy.stats and scikit-learn below: seconds of imports that every
    # Snakemake run would pay (the workflow's config checks import this module for its settings)

    n = len(activations)
    ranks = rankdata(activations)
    literals = concepts.masks
    names = list(concepts.names)
    if s.negation:
        literals = np.concatenate([literals, ~literals])
        names += [f"NOT {name}" for name in concepts.names]
    lo, hi = s.min_fraction * n, s.max_fraction * n

    def admissible(masks):
        count = masks.sum(1)
        return (count >= lo) & (count <= hi) & (count > 0) & (count < n)

    def best(cands: list[tuple]) -> list[tuple]:  # (auc, length, formula, mask): keep beam_size distinct masks
        out, seen = [], set()
        for cand in sorted(cands, key=lambda c: (-c[0], c[1], c[2])):
            key = np.packbits(cand[3]).tobytes()
            if key not in seen:
                seen.add(key)
                out.append(cand)
            if len(out) == s.beam_size:
                break
        return out

    ok = admissible(literals)
    if not ok.any():
        raise ValueError(f"no concept holds for a share of images in [min_fraction, max_fraction] = "
                         f"[{s.min_fraction}, {s.max_fraction}]")
    aucs = auc_from_ranks(literals[ok], ranks)
    beam = best([(a, 1, names[i], literals[i]) for a, i in zip(aucs, np.flatnonzero(ok))])
    for length in range(2, s.max_length + 1):
        cands = []
        for auc, _, formula, mask in beam:
            for op, combined in (("AND", literals & mask), ("OR", literals | mask)):
                keep = admissible(combined) & (combined != mask).any(1)
                aucs = auc_from_ranks(combined[keep], ranks)
                cands += [(a, length, _join(formula, length - 1, op, names[i]), combined[i])
                          for a, i in zip(aucs, np.flatnonzero(keep))]
        beam = best(beam + cands)  # the old beam competes too: beam[0] is the best formula seen so far
    auc, length, formula, mask = beam[0]
    return Label(formula, mask, length, float(auc))


def label_neurons(activations: np.ndarray, concepts: Concepts, neurons: list[int], s: InvertSettings) -> pd.DataFrame:
    """One row per neuron: neuron, formula, auc (roc_auc_score), p_value (one-sided Mann-Whitney U), length,
    fraction (share of images the formula holds for)."""
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import roc_auc_score

    rows = []
    for c in neurons:
        a = activations[:, c]
        label = beam_search(a, concepts, s)
        p = mannwhitneyu(a[label.mask], a[~label.mask], alternative="greater").pvalue
        rows.append({"neuron": c, "formula": label.formula, "auc": roc_auc_score(label.mask, a),
                     "p_value": float(p), "length": label.length, "fraction": float(label.mask.mean())})
    return pd.DataFrame(rows)


def aligned_attributes(store_paths: list[str], attributes_csv, store_name: str = "the feature store") -> pd.DataFrame:
    """The rows of attributes.csv in the store's image order. Row paths are relative to the csv's folder; a store
    path matches the row whose path is its tail (so relative, absolute and moved stores all match)."""
    table = pd.read_csv(attributes_csv)
    if "path" not in table.columns:
        raise ValueError(f"{attributes_csv} has no 'path' column; it has {list(table.columns)}")
    keys = [PurePosixPath(str(p).replace("\\", "/")).as_posix() for p in table["path"]]
    duplicated = pd.Series(keys)[pd.Series(keys).duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{attributes_csv} lists path(s) {duplicated[:3]} more than once")
    row_of = {k: i for i, k in enumerate(keys)}
    depths = sorted({len(PurePosixPath(k).parts) for k in keys}, reverse=True)
    order, missing = [], []
    for path in store_paths:
        parts = PurePosixPath(str(path).replace("\\", "/")).parts
        tails = ("/".join(parts[-d:]) for d in depths if d <= len(parts))
        hit = next((row_of[t] for t in tails if t in row_of), None)
        if hit is None:
            missing.append(path)
        else:
            order.append(hit)
    if missing:
        raise ValueError(f"{len(missing)} of {len(store_paths)} images of {store_name} have no row in "
                         f"{attributes_csv} (matched by the path relative to its folder), e.g. {missing[:3]}")
    return table.iloc[order].reset_index(drop=True)


def read_activations(store, layer: str, source: str) -> tuple[np.ndarray, list[str]]:
    """(activations [N, C] of `source`/`layer`, image paths) from a feature store."""
    with open_store(store) as h5:
        key = f"{source}/{layer}"
        if key not in h5:
            have = sorted(h5[source].keys()) if source in h5 else []
            raise ValueError(f"feature store {store} has no {key!r}; its {source} layers: {have}")
        paths = [p.decode() if isinstance(p, bytes) else p for p in h5["paths"][:]]
        return h5[key][:].astype(np.float64), paths


def run_invert(store, attributes_csv, layer: str, s: InvertSettings) -> pd.DataFrame:
    activations, paths = read_activations(store, layer, s.source)
    table = aligned_attributes(paths, attributes_csv, f"feature store {store}")
    concepts = concepts_from_attributes(table, s.columns, str(attributes_csv))
    channels = activations.shape[1]
    neurons = list(range(channels)) if s.neurons == "all" else list(s.neurons)
    bad = [c for c in neurons if not isinstance(c, int) or not 0 <= c < channels]
    if bad or not neurons:
        raise ValueError(f"neurons {bad or neurons} are not channels of {layer!r} ({channels} in {store})")
    return label_neurons(activations, concepts, neurons, s)
