"""Sample embedding of one layer (Li et al. 2021, Sec. 3.2): g = M f / c, a bias-free linear map of each sample's
feature f (the layer's spatial mean) into `dims` dimensions, fitted so that the class mixture read off the embeddings
(peekflow.emergence.mixture) reproduces the network's tempered output p = softmax(z / T): minimise
mean_i KL(p_i || q(. | g_i)) by Adam over M. c = mean_i ||f_i|| only sets the units.

`align_rotation` rotates one layer's embedding onto another's (orthogonal Procrustes): norms, angles and hence every
probability stay as they are, and consecutive layers' figures share their axes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from scipy.linalg import orthogonal_procrustes

from peekflow.emergence.mixture import ClassMixture, fit_mixture, kl_divergence

log = logging.getLogger("peekflow.emergence")


@dataclass
class SampleEmbedding:
    weight: torch.Tensor  # [d, C] M
    scale: float  # c
    mixture: ClassMixture  # class means and priors of the fitted embeddings
    history: list[float]  # KL per step

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T / self.scale

    def rotated(self, rotation: torch.Tensor) -> "SampleEmbedding":
        """The same embedding in rotated axes (g -> g R)."""
        mixture = ClassMixture(self.mixture.means @ rotation, self.mixture.prior)
        return SampleEmbedding(rotation.T @ self.weight, self.scale, mixture, self.history)


def softmax_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(logits / temperature, dim=1)


def fit_sample_embedding(features: torch.Tensor, probs: torch.Tensor, dims: int = 3, steps: int = 300,
                         lr: float = 0.05, seed: int = 0, what: str = "sample embedding") -> SampleEmbedding:
    """features [N, C], probs [N, Y] (rows sum to 1) -> the fitted embedding; same seed, same result on CPU."""
    if features.ndim != 2 or probs.ndim != 2 or len(features) != len(probs):
        raise ValueError(f"{what}: need features [N, C] and probabilities [N, Y], got {tuple(features.shape)} and "
                         f"{tuple(probs.shape)}")
    features, probs = features.float(), probs.float()
    scale = float(features.norm(dim=1).mean())
    if not scale > 0:
        raise ValueError(f"{what}: every feature is zero")
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(dims, features.shape[1], generator=generator).to(features.device).requires_grad_(True)
    opt = torch.optim.Adam([weight], lr=lr)
    history = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        emb = features @ weight.T / scale
        loss = kl_divergence(probs, fit_mixture(emb, probs).log_posterior(emb))
        loss.backward()
        opt.step()
        history.append(loss.item())
        if (step + 1) % max(1, steps // 5) == 0:
            log.info("%s: step %d/%d KL %.4f", what, step + 1, steps, history[-1])
    weight = weight.detach()
    with torch.no_grad():
        emb = features @ weight.T / scale
        mixture = fit_mixture(emb, probs)
        history.append(kl_divergence(probs, mixture.log_posterior(emb)).item())
    return SampleEmbedding(weight, scale, mixture.detach(), history)


def align_rotation(emb: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The orthogonal R [d, d] minimising ||emb R - reference||_F (scipy's orthogonal Procrustes)."""
    rotation, _ = orthogonal_procrustes(emb.detach().cpu().double().numpy(), reference.detach().cpu().double().numpy())
    return torch.from_numpy(rotation).to(emb)
