"""SHE: simplified Hopfield energy (Zhang, Fu, Liu, Chen, Qiao, Ma & Wang, "Out-of-Distribution Detection based on
In-Distribution Data Patterns Memorization with Modern Hopfield Energy", ICLR 2023).

    s_k = mean of the penultimate features of the fit rows of class k that the network classifies as k
    score(x) = < x, s_{argmax_k z_k} >          the stored pattern of the predicted class

On the pooled penultimate features; predictions are the argmax of the stored logits (pytorch-ood recomputes them
from a head). Fitted on the labelled rows of the ID training store or of a
prototype bank (`_deepinversion` / `_deepdream`). A class without a correctly classified fit row (a bank without
that class, or a model that gets none of its rows right) stores no pattern: an input predicted as it scores 0, as
little ID as a post-ReLU feature can be against a post-ReLU pattern, and the table's notes name those classes (the
paper's code leaves them NaN). Higher = more ID (pytorch-ood's SHE returns minus the inner product).
"""

from __future__ import annotations

import numpy as np

import logging

from peekflow.features.store import FeatureSet
from peekflow.ood.base import FLOAT64, checked_features, register_with_banks, stored_logits
from peekflow.ood.posthoc import Fitted, features64, known_rows, row_chunks

log = logging.getLogger("peekflow")


@register_with_banks("she")
class SHE(Fitted):
    precision = FLOAT64

    def __init__(self):
        pass

    def _fit(self, train: FeatureSet) -> None:
        x, labels, logits = checked_features(train), np.asarray(train.labels), stored_logits(train)
        known_rows(self.name, train)
        k = logits.shape[1]
        sums, counts = np.zeros((k, x.shape[1])), np.zeros(k)
        for rows in row_chunks(len(x)):  # class sums of the correctly classified rows, chunk by chunk
            y = labels[rows]
            right = (y >= 0) & (logits[rows].argmax(axis=1) == y)
            np.add.at(sums, y[right], np.asarray(x[rows][right], dtype=np.float64))
            np.add.at(counts, y[right], 1)
        missing = np.flatnonzero(counts == 0)
        if len(missing):
            shown = ", ".join(map(str, missing[:8])) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            log.warning("%s: %d of %d classes have no correctly classified row in the fit store %r (class %s): no "
                        "pattern, so an input predicted as one of them scores 0, the least ID", self.name,
                        len(missing), k, train.name, shown)
        self._patterns = sums / np.maximum(counts, 1)[:, None]  # zero where a class has no right row

    def _score(self, data: FeatureSet) -> np.ndarray:
        z, out = stored_logits(data), np.empty(len(data.labels))
        for rows in row_chunks(len(out)):
            out[rows] = np.einsum("ij,ij->i", features64(data, rows), self._patterns[z[rows].argmax(axis=1)])
        return out
