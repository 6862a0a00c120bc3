"""Knowledge points (Li et al. 2021, Sec. 3.4): regions whose embedding already points clearly to one class, i.e.
whose class probability under the layer's sample mixture (peekflow.emergence.mixture) reaches the threshold
(0.4 in the paper): max_y q(y | h_ir) >= threshold. Regions whose importance weight is below min_weight / R (R
regions per sample; 0 = every region counts) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from peekflow.emergence.mixture import ClassMixture


@dataclass
class KnowledgePoints:
    probability: torch.Tensor  # [..., R] max_y q(y | h)
    classes: torch.Tensor  # [..., R] argmax_y q(y | h)
    mask: torch.Tensor  # [..., R] bool: a knowledge point

    def count(self) -> int:
        return int(self.mask.sum())

    def count_of(self, labels: torch.Tensor) -> int:
        """Knowledge points that point to their sample's label; labels [...]."""
        return int((self.mask & (self.classes == labels[..., None])).sum())


def knowledge_points(region_emb: torch.Tensor, mixture: ClassMixture, threshold: float = 0.4,
                     region_weights: torch.Tensor | None = None, min_weight: float = 0.0) -> KnowledgePoints:
    """region_emb [..., R, d] (+ weights [..., R]) -> per region: best class, its probability, knowledge point."""
    if not 0 < threshold <= 1:
        raise ValueError(f"knowledge-point threshold must be in (0, 1], got {threshold}")
    with torch.no_grad():
        probability, classes = mixture.log_posterior(region_emb).exp().max(-1)
    mask = probability >= threshold
    if region_weights is not None and min_weight > 0:
        mask &= region_weights >= min_weight / region_weights.shape[-1]
    return KnowledgePoints(probability, classes, mask)
