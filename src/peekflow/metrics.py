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
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

RECALL = 0.95
METRIC_KEYS = ("auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out")


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
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    return float(fpr[np.argmax(tpr >= recall)])


def ood_metrics(id_scores, ood_scores) -> dict:
    """auroc, fpr95, fpr95_openood, aupr_in, aupr_out (percent) and n_id, n_ood for scores where higher = more ID."""
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
