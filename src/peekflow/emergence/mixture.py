"""The von Mises-Fisher mixture over class directions that sample and regional embeddings are read with.

An embedding e (a sample's g or a region's h) has the direction o = e / ||e|| and the confidence ||e||. Class y has
the probability-weighted mean of the sample directions m_y = sum_i p_iy o_i / sum_i p_iy -- its direction
mu_y = m_y / ||m_y|| and its mean resultant length rbar_y = ||m_y|| in [0, 1] -- and the prior pi_y = mean_i p_iy.
Under class y the direction follows vMF(mu_y, kappa_y(e)) with kappa_y(e) = ||e|| rbar_y, the embedding's
confidence times how tightly the class's samples gather, so that

    log q(y | e) = log pi_y + log C_d(||e|| rbar_y) + m_y^T e  -  logsumexp over y of the same.

The normaliser C_d (peekflow.emergence.vmf) does not cancel, as the concentration differs by class: a loose class
spreads its mass and claims directions far from its mean, a tight one only its own neighbourhood.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from peekflow.emergence.vmf import log_normaliser_t

EPS = 1e-12


@dataclass
class ClassMixture:
    means: torch.Tensor  # [Y, d] m_y: direction mu_y times mean resultant length rbar_y
    prior: torch.Tensor  # [Y] pi_y

    @property
    def directions(self) -> torch.Tensor:
        return self.means / self.means.norm(dim=1, keepdim=True).clamp_min(EPS)

    def log_posterior(self, emb: torch.Tensor) -> torch.Tensor:
        """log q(y | e) for embeddings [..., d] -> [..., Y]."""
        return class_log_posterior(emb, self.means, self.prior)

    def detach(self) -> "ClassMixture":
        return ClassMixture(self.means.detach(), self.prior.detach())


def unit(emb: torch.Tensor) -> torch.Tensor:
    return emb / emb.norm(dim=-1, keepdim=True).clamp_min(EPS)


def fit_mixture(emb: torch.Tensor, probs: torch.Tensor) -> ClassMixture:
    """Class means m_y and priors pi_y of sample embeddings [N, d] under target probabilities [N, Y]."""
    mass = probs.sum(0)  # [Y]
    means = probs.T @ unit(emb) / mass.clamp_min(EPS)[:, None]
    return ClassMixture(means, mass / probs.shape[0])


def class_log_posterior(emb: torch.Tensor, means: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    norm = emb.norm(dim=-1, keepdim=True)  # [..., 1]
    kappa = norm * means.norm(dim=1)  # [..., Y]
    logits = prior.clamp_min(EPS).log() + log_normaliser_t(kappa, means.shape[1]) + emb @ means.T
    return torch.log_softmax(logits, dim=-1)


def kl_divergence(probs: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """mean over rows of KL(p || q) for target probabilities p [N, Y] and log q [N, Y]."""
    return (probs * (probs.clamp_min(EPS).log() - log_q)).sum(-1).mean()
