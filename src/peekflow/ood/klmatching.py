"""KL-Matching (Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling Out-of-Distribution
Detection for Real-World Settings", ICML 2022).

    d_k = mean of softmax(z) over the fit rows whose prediction is k           (one template per predicted class)
    score(x) = -min_k KL(softmax(z(x)) || d_k)

Logits only. The templates are fitted on the ID *training* store (the paper uses a validation split; never the ID
test set: scoring refuses data sharing an image with the fit store), or on a prototype bank (the `_deepinversion` /
`_deepdream` variants). As in pytorch-ood, only classes predicted at least once get a template and labels are
not used, so unlabelled rows count too. Higher = more ID: pytorch-ood's KLMatching returns +min_k KL.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from peekflow.features.store import FeatureSet
from peekflow.ood.base import register_with_banks, stored_logits
from peekflow.ood.posthoc import Fitted, logits64, row_chunks


@register_with_banks("klmatching")
class KLMatching(Fitted):
    uses_features = False

    def __init__(self):
        self._log_templates = None

    def _fit(self, train: FeatureSet) -> None:
        k = stored_logits(train).shape[1]
        sums, counts = np.zeros((k, k)), np.zeros(k)
        for rows in row_chunks(len(train.logits)):  # softmax rows summed by predicted class, chunk by chunk
            log_p = log_softmax(logits64(train, rows), axis=1)
            predicted = log_p.argmax(axis=1)
            np.add.at(sums, predicted, np.exp(log_p))
            np.add.at(counts, predicted, 1)
        seen = counts > 0
        with np.errstate(divide="ignore"):
            self._log_templates = np.log(sums[seen] / counts[seen, None])

    def _score(self, data: FeatureSet) -> np.ndarray:
        finite = np.where(np.isfinite(self._log_templates), self._log_templates, np.finfo(np.float64).min)
        out = np.empty(len(stored_logits(data)))
        for rows in row_chunks(len(out)):
            log_p = log_softmax(logits64(data, rows), axis=1)
            p = np.exp(log_p)
            kl = (p * log_p).sum(axis=1, keepdims=True) - p @ finite.T
            out[rows] = -kl.min(axis=1)
        return out
