"""GEN: generalised entropy (Liu, Lochman & Zach, "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution
Detection", CVPR 2023).

    p = softmax(z),   score(x) = -sum_{j in top-M of p} p_j^gamma (1 - p_j)^gamma

Logits only. `gamma` 0.1 and `top` M = 100 (capped at K) are the paper's ImageNet settings. As the paper's code: a
sum over the M largest probabilities, without clipping p. Higher = more ID. pytorch-ood's GEN returns the *mean*
over the M terms, with p clipped to [1e-7, 1 - 1e-7]: peekflow's score is -M times it where no p is clipped.

Precision: exact to float64 rounding (relative error <= 1e-12 against 50-digit arithmetic on the stored logits) for
any margin, ties and K. Each term is exp(gamma (log p_j + log(1 - p_j))) with log p from a log softmax, and 1 - p of
the predicted class from the other classes' sum (peekflow.ood.posthoc.log_softmax_parts): as 1 - p it would cancel
where p ~ 1 (a confident ImageNet model's usual ID image) and vanish below 1e-16, dropping the largest term.
"""

from __future__ import annotations

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.ood.base import Detector, positive_number, register, stored_logits
from peekflow.ood.posthoc import log_softmax_parts, row_chunks


@register("gen")
class GEN(Detector):
    settings_help = {"gamma": "exponent of p^gamma (1 - p)^gamma (a list sweeps it)",
                     "top": "M: only the M largest probabilities count (capped at the number of classes)"}
    sweeps = ("gamma",)
    precision = "float64: relative error <= 1e-12 for any margin (1 - p from the other classes' sum)"

    def __init__(self, gamma: float = 0.1, top: int = 100):
        self.gamma = float(positive_number(gamma, "gen: gamma"))
        self.top = int(positive_number(top, "gen: top", integer=True))

    def score(self, data: FeatureSet) -> np.ndarray:
        z = stored_logits(data)
        out = np.empty(len(z))
        for rows in row_chunks(len(z)):
            log_p, log_q, predicted = log_softmax_parts(z[rows])
            columns = np.broadcast_to(np.arange(z.shape[1]), log_p.shape)
            if self.top < z.shape[1]:
                columns = np.argpartition(-log_p, self.top - 1, axis=1)[:, : self.top]
                log_p = np.take_along_axis(log_p, columns, axis=1)
            # log(1 - p_j): from the others' sum for the predicted class, else log1p(-p_j), exact as p_j <= 1/2
            with np.errstate(divide="ignore"):  # log1p(-1) of the predicted class, replaced by log_q
                log_rest = np.where(columns == predicted[:, None], log_q[:, None], np.log1p(-np.exp(log_p)))
            out[rows] = -np.exp(self.gamma * (log_p + log_rest)).sum(axis=1)
        return out
