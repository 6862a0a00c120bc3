"""Importance weights (Li et al. 2021, Sec. 3.3): per sample i, non-negative L1-normalised weights w_i over its regions
and v_i over its channels, fitted so that region-wise similarity between samples reproduces the similarity of their
outputs (peekflow.emergence.similarity: minimise mean_i KL(P_i || Q_i)), with

    s_ijr = max_r' C sum_k v_ik fhat_ikr fhat_jkr'      fhat: each region's feature scaled to unit norm; C channels,
                                                       so uniform channel weights give the plain cosine
    Q_ir(j) = softmax_{j != i}(kappa_r s_ijr)

The maximum aligns region r of i with the most similar region r' of j under i's current channel weights (the
alignment is re-read every step; the gradient flows through the chosen pair). w = softmax(a), v = softmax(b) keep
both on the simplex; Adam on a and b from uniform weights; no random choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from peekflow.emergence.mixture import EPS
from peekflow.emergence.similarity import kl_rows, output_log_similarity, row_blocks, sample_log_similarity, self_mask

log = logging.getLogger("peekflow.emergence")


@dataclass
class ImportanceWeights:
    regions: torch.Tensor  # [N, R] w, rows sum to 1
    channels: torch.Tensor  # [N, C] v, rows sum to 1
    alignment: torch.Tensor  # [N, N, R] int64: r' of j aligned to region r of i under the final v
    history: list[float]  # mean KL per step


def unit_regions(regional: torch.Tensor) -> torch.Tensor:
    """[N, C, R] regional features scaled to unit norm over channels (all-zero regions stay zero)."""
    return regional / regional.norm(dim=1, keepdim=True).clamp_min(EPS)


def pair_similarity(unit: torch.Tensor, channels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """C sum_k v_ik fhat_ikr fhat_jkr' for every j, r, r': [B, N, R, R]."""
    weighted = unit[rows] * channels[rows][:, :, None] * unit.shape[1]  # [B, C, R]
    return torch.einsum("bkr,jks->bjrs", weighted, unit)


def fit_importance(regional: torch.Tensor, probs: torch.Tensor, steps: int = 100, lr: float = 0.1,
                   kappa_target: float = 5.0, kappa_regions: float = 10.0,
                   what: str = "importance weights") -> ImportanceWeights:
    """regional [N, C, R] features of N samples' R regions, probs [N, Y] -> fitted weights."""
    n, c, r = regional.shape
    if len(probs) != n or n < 2:
        raise ValueError(f"{what}: need >= 2 samples and one probability row per sample, got {n} and {len(probs)}")
    unit = unit_regions(regional.float())
    log_p = output_log_similarity(probs.float(), kappa_target)
    a = torch.zeros(n, r, device=regional.device, requires_grad=True)
    b = torch.zeros(n, c, device=regional.device, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=lr)
    blocks = row_blocks(n, n * r * r)
    history = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for rows in blocks:  # the loss is a sum over rows i: accumulate each block's gradient
            w, v = torch.softmax(a, dim=1), torch.softmax(b, dim=1)
            s = pair_similarity(unit, v, rows).amax(-1)  # [B, N, R]
            mask = self_mask(rows, n, regional.device)
            loss = kl_rows(log_p[rows], sample_log_similarity(kappa_regions * s, w[rows], mask), mask).sum() / n
            loss.backward()
            total += loss.item()
        opt.step()
        history.append(total)
        if (step + 1) % max(1, steps // 5) == 0:
            log.info("%s: step %d/%d KL %.4f", what, step + 1, steps, total)
    with torch.no_grad():
        w, v = torch.softmax(a, dim=1), torch.softmax(b, dim=1)
        alignment = torch.cat([pair_similarity(unit, v, rows).argmax(-1) for rows in blocks])
    return ImportanceWeights(w.detach(), v.detach(), alignment, history)
