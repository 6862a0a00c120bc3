"""KL-Matching (Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling Out-of-Distribution
Detection for Real-World Settings", ICML 2022).

    d_k = mean of softmax(z) over the fit rows whose prediction is k           (one template per predicted class)
    score(x) = -min_k KL(softmax(z(x)) || d_k)

Logits only. The templates are fitted on the ID *training* store (the paper uses a validation split; never the ID
test set: scoring refuses data sharing an image with the fit store), or on a prototype bank (the `_deepinversion` /
`_deepdream` variants). As in pytorch-ood, only classes predicted at least once get a template and labels are
not used, so unlabelled rows count too. Higher = more ID: pytorch-ood's KLMatching returns +min_k KL.

Precision: float64-exact (relative error <= 1e-9 against 50-digit arithmetic on the stored logits, for margins up
to 100 and beyond). A confident row's KL is of the order of 1 - p, which float32 resolves only to ~6e-8: so the
templates are fitted in float64 and kept as logs (a streaming log-sum-exp over the rows, so no entry underflows to 0,
an infinite KL; pytorch-ood's float32 templates do where a class's probabilities fall below ~1e-38), and the entry
d_kk of each template's own class, near 1, is kept as 1 - d_kk = the mean of its rows' 1 - p, each from the other
classes' sum (peekflow.ood.posthoc.log_softmax_parts). KL = sum_j p_j log p_j - sum_j p_j log d_kj: two sums of
same-sign terms, each exact to rounding, whose difference keeps ~12 digits of a confident row's KL.
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import register_with_banks, stored_logits
from peekflow.ood.posthoc import CHUNK, Fitted, log_softmax_parts, row_chunks


@register_with_banks("klmatching")
class KLMatching(Fitted):
    uses_features = False
    precision = "float64: relative error <= 1e-9 for margins up to 100 (templates in float64 logs, d_kk by 1 - d_kk)"

    def __init__(self):
        self._log_templates = None

    def _fit(self, train: FeatureSet) -> None:
        # Per predicted class and column (the K log p columns and one of log(1 - p_k)): a running maximum `top` of the
        # log values and the sum of exp(value - top) over its rows, rescaled when `top` rises (a streaming
        # log-sum-exp in float64).
        k = stored_logits(train).shape[1]
        top, sums, counts = np.full((k, k + 1), -np.inf), np.zeros((k, k + 1)), np.zeros(k)
        for rows in row_chunks(len(train.logits), 4 * CHUNK):
            log_p, log_q, predicted = log_softmax_parts(stored_logits(train)[rows])
            order = np.argsort(predicted, kind="stable")
            classes, starts, n = np.unique(predicted[order], return_index=True, return_counts=True)
            values = np.concatenate([log_p, log_q[:, None]], axis=1)[order]
            new_top = np.maximum(top[classes], np.maximum.reduceat(values, starts, axis=0))
            safe = np.where(np.isfinite(new_top), new_top, 0.0)  # a column of -inf only (1 - p = 0) sums to 0
            terms = np.exp(values - np.repeat(safe, n, axis=0))
            sums[classes] = sums[classes] * np.exp(top[classes] - safe) + np.add.reduceat(terms, starts, axis=0)
            top[classes], counts[classes] = new_top, counts[classes] + n
        seen = np.flatnonzero(counts > 0)
        with np.errstate(divide="ignore"):
            logs = top[seen] + np.log(sums[seen]) - np.log(counts[seen, None])
        own = logs[:, -1]  # log(1 - d_kk): where d_kk > 1/2, log d_kk = log1p(-(1 - d_kk)) keeps its distance to 1
        self._log_templates = logs[:, :k]
        near_one = own < np.log(0.5)
        self._log_templates[near_one, seen[near_one]] = np.log1p(-np.exp(own[near_one]))

    def _score(self, data: FeatureSet) -> np.ndarray:
        z, out = stored_logits(data), np.empty(len(data.logits))
        for rows in row_chunks(len(out)):
            log_p = log_softmax_parts(z[rows])[0]
            p = np.exp(log_p)
            kl = np.einsum("ij,ij->i", p, log_p)[:, None] - p @ self._log_templates.T
            out[rows] = -kl.min(axis=1)
        return out
