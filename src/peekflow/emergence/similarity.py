"""Which other samples does sample i resemble? The output's answer and the regions' answer, as distributions over j.

    output   P_i(j)     = softmax_{j != i}(kappa_p cos(p_i, p_j))               p: the tempered output probabilities
    region   Q_ir(j)    = softmax_{j != i}(kappa_ir s_ijr)                       s_ijr: similarity of region r of i
                                                                                 to its aligned region of j
    sample   log Q_i(j) = log softmax_j(sum_r w_ir log Q_ir(j))                  w_i: region weights, sum_r w_ir = 1

The sample's distribution is the regions' geometric mixture: a region of weight 0 has no say. The importance weights
and the regional embedding are both fitted by minimising mean_i KL(P_i || Q_i) (peekflow.emergence.importance,
.regional). Every function takes a block of rows i (`rows`) so that callers bound their memory.
"""

from __future__ import annotations

import torch

from peekflow.emergence.mixture import EPS

BLOCK_ELEMENTS = 1 << 22  # ~16 MB of float32 per block of rows


def row_blocks(n_rows: int, per_row: int) -> list[torch.Tensor]:
    """Consecutive index blocks whose [block, per_row] tensors stay near BLOCK_ELEMENTS."""
    size = max(1, BLOCK_ELEMENTS // max(1, per_row))
    return [torch.arange(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]


def self_mask(rows: torch.Tensor, n: int, device=None) -> torch.Tensor:
    """[B, N] True where j == i."""
    return rows.to(device)[:, None] == torch.arange(n, device=device)[None, :]


def output_log_similarity(probs: torch.Tensor, kappa: float) -> torch.Tensor:
    """log P_i(j) [N, N] (log 0 on the diagonal)."""
    unit = probs / probs.norm(dim=1, keepdim=True).clamp_min(EPS)
    logits = kappa * unit @ unit.T
    logits.fill_diagonal_(float("-inf"))
    return torch.log_softmax(logits, dim=1)


def sample_log_similarity(region_logits: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log Q_i(j) [B, N] from per-region logits kappa_ir s_ijr [B, N, R], weights [B, R] and the j == i mask."""
    region_logits = region_logits.masked_fill(mask[:, :, None], float("-inf"))
    per_region = torch.log_softmax(region_logits, dim=1).masked_fill(mask[:, :, None], 0.0)  # log Q_ir(j)
    mixed = (per_region * weights[:, None, :]).sum(-1).masked_fill(mask, float("-inf"))
    return torch.log_softmax(mixed, dim=1)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(P_i || Q_i) per row [B], the j == i entries left out."""
    p = log_p.exp()
    terms = torch.where(mask | (p == 0), torch.zeros_like(p), p * (log_p - log_q))
    return terms.sum(1)
