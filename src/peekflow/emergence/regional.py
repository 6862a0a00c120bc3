"""Regional embedding (Li et al. 2021, Sec. 3.3): h_ir = Lambda f_ir / c_r, one bias-free linear map of every regional
feature into the sample embedding's space (c_r: the mean regional feature norm, only units). Fitted by minimising

    lambda_kl * mean_i KL(P_i || Q_i)        KL over aligned regions: Q_ir(j) = softmax_{j != i}(||h_ir|| cos(h_ir,
                                             h_jr')), r' the importance stage's alignment, mixed with the region
                                             weights w_i (peekflow.emergence.similarity)
  + lambda_mi * mean_i -sum_r w_ir cos(h_ir, g_i)    the mutual-information term: important regions point where
                                                     their sample's embedding g_i points

so that the class mixture of the sample embedding can read each region (knowledge points). The KL term does not
change under an orthogonal map of the embedding; gradient steps on the MI term cannot undo a reflection. Hence, half
way and at the end, the map is turned by the orthogonal R (reflections allowed) that maximises the MI term,
sum_ir w_ir cos(h_ir R, g_i) (weighted Procrustes), and the optimiser restarts from there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from peekflow.emergence.mixture import unit
from peekflow.emergence.similarity import kl_rows, output_log_similarity, row_blocks, sample_log_similarity, self_mask

log = logging.getLogger("peekflow.emergence")


@dataclass
class RegionalEmbedding:
    weight: torch.Tensor  # [d, C] Lambda
    scale: float  # c_r
    history: list[float]  # loss per step

    def embed(self, regional: torch.Tensor) -> torch.Tensor:
        """[N, C, R] regional features -> [N, R, d]."""
        return torch.einsum("dk,nkr->nrd", self.weight, regional) / self.scale


def fit_regional_embedding(regional: torch.Tensor, probs: torch.Tensor, sample_emb: torch.Tensor,
                           region_weights: torch.Tensor, alignment: torch.Tensor, steps: int = 200, lr: float = 0.05,
                           kappa_target: float = 5.0, lambda_kl: float = 1.0, lambda_mi: float = 1.0, seed: int = 0,
                           what: str = "regional embedding") -> RegionalEmbedding:
    """regional [N, C, R], probs [N, Y], sample_emb [N, d], region_weights [N, R], alignment [N, N, R] -> fitted map."""
    n, c, r = regional.shape
    d = sample_emb.shape[1]
    regional = regional.float()
    scale = float(regional.norm(dim=1).mean())
    if not scale > 0:
        raise ValueError(f"{what}: every regional feature is zero")
    log_p = output_log_similarity(probs.float(), kappa_target)
    target_dir = unit(sample_emb.float())
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(d, c, generator=generator).to(regional.device).requires_grad_(True)
    blocks = row_blocks(n, n * r * d)
    others = torch.arange(n, device=regional.device)[None, :, None]  # j, broadcast against alignment [B, N, R]
    history = []
    for step in range(steps):
        if step in (0, steps // 2):
            if step:
                snap_orientation(weight, regional, scale, target_dir, region_weights)
            opt = torch.optim.Adam([weight], lr=lr)
        opt.zero_grad(set_to_none=True)
        # Memory bounded by one block: each block's KL is back-propagated to the embedding e on its own (its graph
        # freed at once), then e's summed gradient goes through the linear map in one backward.
        emb = torch.einsum("dk,nkr->nrd", weight, regional) / scale  # [N, R, d]
        e = emb.detach().requires_grad_(True)
        kl = 0.0
        for rows in blocks:
            direction = unit(e)
            aligned = direction[others, alignment[rows]]  # [B, N, R, d]: h_jr' / ||h_jr'||
            cos = (direction[rows][:, None] * aligned).sum(-1)  # [B, N, R]
            kappa = e[rows].norm(dim=-1)[:, None, :]  # [B, 1, R]
            mask = self_mask(rows, n, regional.device)
            log_q = sample_log_similarity(kappa * cos, region_weights[rows], mask)
            part = kl_rows(log_p[rows], log_q, mask).sum() / n
            (lambda_kl * part).backward()
            kl += part.item()
        mi = -(region_weights * (unit(e) * target_dir[:, None, :]).sum(-1)).sum(1).mean()
        (lambda_mi * mi).backward()
        emb.backward(e.grad)
        history.append(lambda_kl * kl + lambda_mi * mi.item())
        opt.step()
        if (step + 1) % max(1, steps // 5) == 0:
            log.info("%s: step %d/%d loss %.4f (KL %.4f, MI term %.4f)", what, step + 1, steps, history[-1], kl,
                     mi.item())
    snap_orientation(weight, regional, scale, target_dir, region_weights)
    return RegionalEmbedding(weight.detach(), scale, history)


@torch.no_grad()
def snap_orientation(weight: torch.Tensor, regional: torch.Tensor, scale: float, target_dir: torch.Tensor,
                     region_weights: torch.Tensor) -> None:
    """Turn Lambda in place by the orthogonal R maximising sum_ir w_ir cos(h_ir R, g_i)."""
    direction = unit(torch.einsum("dk,nkr->nrd", weight, regional) / scale)  # [N, R, d]
    cross = torch.einsum("nr,nrd,ne->de", region_weights, direction, target_dir)  # sum w h^T g
    u, _, vt = torch.linalg.svd(cross.double())
    weight.copy_((u @ vt).T.to(weight) @ weight)
