"""KL-Matching (Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling Out-of-Distribution
Detection for Real-World Settings", ICML 2022).

    d_k = mean of softmax(z) over the fit rows whose prediction is k           (one template per predicted class)
    score(x) = -min_k KL(softmax(z(x)) || d_k)

Logits only. The templates are fitted on the ID *training* store (the paper uses a validation split; never the ID
test set: scoring refuses data sharing an image with the fit store), or on a prototype bank (the `_deepinversion` /
`_deepdream` variants). As in pytorch-ood, only classes predicted at least once get a template and labels are
not used, so unlabelled rows count too. Higher = more ID: pytorch-ood's KLMatching returns +min_k KL.
peekflow keeps log d_k (a log-sum-exp over the rows), so no template entry underflows to 0 (an infinite KL);
pytorch-ood's float32 templates do, where a class's probabilities fall below ~1e-38.
"""

from __future__ import annotations

import numpy as np
from peekflow.features.store import FeatureSet
from peekflow.ood.base import register_with_banks, stored_logits
from peekflow.ood.posthoc import CHUNK, Fitted, logits64, row_chunks, softmax_parts


@register_with_banks("klmatching")
class KLMatching(Fitted):
    uses_features = False

    def __init__(self):
        self._log_templates = None

    def _fit(self, train: FeatureSet) -> None:
        # In log space, so a template keeps probabilities that no float type could hold as p: per predicted class
        # and column, a running maximum `top` of log p and the sum of exp(log p - top) over its rows, rescaled when
        # `top` rises (a streaming log-sum-exp). log p comes from the stored float32 logits, as precise as they are.
        k = stored_logits(train).shape[1]
        top, sums, counts = np.full((k, k), -np.inf), np.zeros((k, k)), np.zeros(k)
        for rows in row_chunks(len(train.logits), 4 * CHUNK):
            shifted, _, total, predicted = softmax_parts(stored_logits(train)[rows])
            order = np.argsort(predicted, kind="stable")
            classes, starts, n = np.unique(predicted[order], return_index=True, return_counts=True)
            log_p = shifted[order] - np.log(total[order, None]).astype(shifted.dtype)
            new_top = np.maximum(top[classes], np.maximum.reduceat(log_p, starts, axis=0))
            terms = np.exp(log_p - np.repeat(new_top, n, axis=0).astype(log_p.dtype))
            sums[classes] = sums[classes] * np.exp(top[classes] - new_top) + np.add.reduceat(
                terms, starts, axis=0, dtype=np.float64)
            top[classes], counts[classes] = new_top, counts[classes] + n
        seen = counts > 0
        self._log_templates = top[seen] + np.log(sums[seen]) - np.log(counts[seen, None])

    def _score(self, data: FeatureSet) -> np.ndarray:
        out = np.empty(len(stored_logits(data)))
        for rows in row_chunks(len(out)):
            shifted, e, total, _ = softmax_parts(logits64(data, rows))
            p = e / total[:, None]
            log_p = shifted - np.log(total)[:, None]
            kl = np.einsum("ij,ij->i", p, log_p)[:, None] - p @ self._log_templates.T
            out[rows] = -kl.min(axis=1)
        return out
