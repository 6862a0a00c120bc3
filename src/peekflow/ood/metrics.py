"""OOD detection metrics from two score arrays, in percent.

Convention (every detector in peekflow): a higher score means "more in-distribution" (ID).

- auroc          area under the ROC curve with ID as the positive class (ties count one half):
                 P(s_id > s_ood) + 0.5 * P(s_id == s_ood).
- fpr95          classic FPR@95%TPR of the KNN / Energy / PEEK papers: ID positive; t = the highest threshold with
                 #{s_id >= t} / n_id >= 0.95; fpr95 = #{s_ood >= t} / n_ood (OOD accepted while 95% of ID is kept).
- fpr95_openood  OpenOOD v1.5: OOD positive with score -s; at the first ROC point whose OOD recall is >= 0.95,
                 the share of ID scores that are rejected (called OOD).
- aupr_in        average precision with ID positive on s; aupr_out: OOD positive on -s.

Curves come from scikit-learn (roc_curve with drop_intermediate=False, roc_auc_score, average_precision_score);
nothing here reimplements them.

Confidence intervals (`bootstrap_metrics`, `percentile_ci`): percentile bootstrap, resampling the ID and the OOD
scores separately (each with replacement, at its own size). A resample's AUROC and fpr95 follow the definitions
above but are computed from per-sample multiplicities (counts under sorted scores), so B resamples cost O(B * n)
array work instead of B sorts; `tests/test_metrics.py` checks them against `ood_metrics` on explicit resamples.
ID resamples depend only on (seed, n_id): every method and OOD set of a table shares them (a paired bootstrap).
"""

from __future__ import annotations

import numpy as np

RECALL = 0.95
METRIC_KEYS = ("auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out")
CI_LEVEL = 0.95
BOOTSTRAP_KEYS = ("auroc", "fpr95")  # metrics that get a confidence interval
CI_KEYS = tuple(f"{key}_{end}" for key in BOOTSTRAP_KEYS for end in ("lo", "hi"))
_CHUNK_ELEMENTS = 1 << 21  # resampled scores per chunk: bounds the bootstrap's arrays at a few tens of MB each


def _checked(scores, side: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{side} scores must be a 1-D array, got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{side} scores are empty")
    bad = int(np.count_nonzero(~np.isfinite(s)))
    if bad:
        raise ValueError(f"{side} scores contain {bad} non-finite value(s) (NaN or inf) out of {s.size}")
    return s


def _fpr_at_recall(positive: np.ndarray, score: np.ndarray, recall: float = RECALL) -> float:
    """FPR at the first ROC point (highest threshold) whose TPR reaches `recall`."""
    from sklearn.metrics import roc_curve  # here: scikit-learn takes a second to import, and every Snakemake run
    # imports this module (for METRIC_KEYS, through the replicas' summaries)

    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    return float(fpr[np.argmax(tpr >= recall)])


def ood_metrics(id_scores, ood_scores) -> dict:
    """auroc, fpr95, fpr95_openood, aupr_in, aupr_out (percent) and n_id, n_ood for scores where higher = more ID."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s_id = _checked(id_scores, "ID")
    s_ood = _checked(ood_scores, "OOD")
    s = np.concatenate([s_id, s_ood])
    is_id = np.concatenate([np.ones(s_id.size, dtype=np.int8), np.zeros(s_ood.size, dtype=np.int8)])
    is_ood = 1 - is_id
    return {
        "auroc": 100.0 * float(roc_auc_score(is_id, s)),
        "fpr95": 100.0 * _fpr_at_recall(is_id, s),
        "fpr95_openood": 100.0 * _fpr_at_recall(is_ood, -s),
        "aupr_in": 100.0 * float(average_precision_score(is_id, s)),
        "aupr_out": 100.0 * float(average_precision_score(is_ood, -s)),
        "n_id": int(s_id.size),
        "n_ood": int(s_ood.size),
    }


def resample_indices(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """[count, n] indices, one resample with replacement per row, drawn row by row (so chunking never changes them)."""
    return np.stack([rng.integers(0, n, size=n) for _ in range(count)])


def _multiplicities(idx: np.ndarray, n: int) -> np.ndarray:
    """[b, n] resample indices -> [b, n] how often each sample was drawn in each resample."""
    b = idx.shape[0]
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


def resampled_metrics(id_scores, ood_scores, id_idx: np.ndarray, ood_idx: np.ndarray) -> dict[str, np.ndarray]:
    """auroc and fpr95 (percent) of each resample: row r scores ID id_scores[id_idx[r]] against ood_scores[ood_idx[r]].

    Equal to `ood_metrics` on every resample (ties included), without sorting each one.
    """
    s_id = _checked(id_scores, "ID")
    s_ood = _checked(ood_scores, "OOD")
    id_idx, ood_idx = np.atleast_2d(id_idx), np.atleast_2d(ood_idx)
    if id_idx.shape[0] != ood_idx.shape[0]:
        raise ValueError(f"bootstrap: {id_idx.shape[0]} ID resamples but {ood_idx.shape[0]} OOD resamples")
    n_id, n_ood = id_idx.shape[1], ood_idx.shape[1]
    id_order, ood_order = np.argsort(s_id, kind="stable"), np.argsort(s_ood, kind="stable")
    id_sorted, ood_sorted = s_id[id_order], s_ood[ood_order]
    # multiplicities of the sorted scores; cum_ood[:, j] = resampled OOD count among the j lowest OOD scores
    c_id = _multiplicities(id_idx, s_id.size)[:, id_order]
    c_ood = _multiplicities(ood_idx, s_ood.size)[:, ood_order]
    cum_ood = np.zeros((c_ood.shape[0], s_ood.size + 1), dtype=np.int64)
    np.cumsum(c_ood, axis=1, out=cum_ood[:, 1:])

    # AUROC = sum over resampled ID of (#OOD below + 0.5 #OOD tied) / (n_id n_ood), in exact integers (x2)
    below = cum_ood[:, np.searchsorted(ood_sorted, id_sorted, side="left")]
    not_above = cum_ood[:, np.searchsorted(ood_sorted, id_sorted, side="right")]
    auroc = 100.0 * (c_id * (below + not_above)).sum(axis=1) / (2.0 * n_id * n_ood)

    # fpr95: threshold t = the m-th highest resampled ID score, m the fewest kept ID with m / n_id >= RECALL
    # (the same float comparison roc_curve's tpr goes through); OOD accepted = #{resampled OOD >= t}
    m = int(np.argmax(np.arange(1, n_id + 1) / n_id >= RECALL)) + 1
    kept_from_top = np.cumsum(c_id[:, ::-1], axis=1)
    t = id_sorted[::-1][np.argmax(kept_from_top >= m, axis=1)]
    ood_below_t = np.take_along_axis(cum_ood, np.searchsorted(ood_sorted, t, side="left")[:, None], axis=1)[:, 0]
    fpr95 = 100.0 * (n_ood - ood_below_t) / n_ood
    return {"auroc": auroc, "fpr95": fpr95}


def bootstrap_metrics(id_scores, ood_scores, n_bootstrap: int, seed: int, stream: int = 0) -> dict[str, np.ndarray]:
    """auroc and fpr95 of `n_bootstrap` seeded resamples (ID and OOD resampled separately).

    ID indices come from default_rng([seed, 0]), OOD indices from default_rng([seed, 1, stream]): give each OOD set
    of a table its own `stream` so that their resamples are independent, while all share the ID resamples.
    """
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
        raise ValueError(f"bootstrap: n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    s_id = _checked(id_scores, "ID")
    s_ood = _checked(ood_scores, "OOD")
    id_rng, ood_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1, stream])
    rows = max(1, _CHUNK_ELEMENTS // max(s_id.size, s_ood.size))
    out: dict[str, list[np.ndarray]] = {key: [] for key in BOOTSTRAP_KEYS}
    for start in range(0, int(n_bootstrap), rows):
        count = min(rows, int(n_bootstrap) - start)
        chunk = resampled_metrics(s_id, s_ood, resample_indices(s_id.size, count, id_rng),
                                  resample_indices(s_ood.size, count, ood_rng))
        for key, values in chunk.items():
            out[key].append(values)
    return {key: np.concatenate(values) for key, values in out.items()}


def percentile_ci(values, level: float = CI_LEVEL) -> tuple[float, float]:
    """The central `level` interval of bootstrap values (percentile method)."""
    lo, hi = np.percentile(np.asarray(values, dtype=np.float64), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
