"""Image priors: objectives on the images themselves (`acts.images`, [B,3,H,W] in [0,1]), one penalty per image.

With dx = x[..., :, 1:] - x[..., :, :-1] (horizontal neighbours) and dy = x[..., 1:, :] - x[..., :-1, :] (vertical),
each mean taken over one image's channels and positions:

    tv_l1      mean|dx| + mean|dy|          anisotropic total variation (Rudin, Osher & Fatemi, 1992)
    tv_l2      mean dx^2 + mean dy^2        squared total variation (Mahendran & Vedaldi, CVPR 2015, beta = 2)
    l1_edge    mean|dx| + mean|dy|          PEEK's "L1 edge" penalty: the same formula as tv_l1 under PEEK's name
    l2_pixel   mean (x - centre)^2          centre 0 by default: PEEK's penalty on the [0,1] image (pulls to black);
                                            centre=0.5 pulls towards mid-grey instead, with no darkening bias
    penalizer(tv, l1_edge, l2_pixel)  =  tv * tv_l2 + l1_edge * l1_edge + l2_pixel * l2_pixel

`penalizer` mirrors the `Penalizer` of PEEK ("What Neural Networks Know: Uncovering Latent Knowledge in Deep Vision
Models", github.com/gabobaCS/what-neural-networks-know, wnnnk_core/deep_dream.py): its total-variation term is the
squared one (tv_l2), its L1-edge term the absolute one, its L2 term the mean squared pixel of the un-normalised [0,1]
image, each per image and weighted 1.0 by default. A weight of 0 leaves the term out.

DeepInversion (Yin et al., CVPR 2020) uses other, batch-level priors (Frobenius norms of four difference maps,
diagonals included, and the norm of the normalised input): its weights do not carry over to these per-image means.
"""

from __future__ import annotations

import torch

from peekflow.synthesis.objective import Activations, Objective, as_objective, objective


def _diffs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim != 4:
        raise ValueError(f"image priors need images [B,C,H,W], got {tuple(x.shape)}")
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def _mean_abs_diff(x: torch.Tensor) -> torch.Tensor:
    dx, dy = _diffs(x)
    return dx.abs().flatten(1).mean(1) + dy.abs().flatten(1).mean(1)


def tv_l1() -> Objective:
    @objective("tv_l1")
    def fn(acts: Activations):
        return _mean_abs_diff(acts.images)

    return fn


def tv_l2() -> Objective:
    @objective("tv_l2")
    def fn(acts: Activations):
        dx, dy = _diffs(acts.images)
        return dx.pow(2).flatten(1).mean(1) + dy.pow(2).flatten(1).mean(1)

    return fn


def l1_edge() -> Objective:
    @objective("l1_edge")
    def fn(acts: Activations):
        return _mean_abs_diff(acts.images)

    return fn


def l2_pixel(centre: float = 0.0) -> Objective:
    @objective("l2_pixel" if centre == 0 else f"l2_pixel(centre={centre:g})")
    def fn(acts: Activations):
        return (acts.images - centre).pow(2).flatten(1).mean(1)

    return fn


def penalizer(tv: float = 1.0, l1_edge: float = 1.0, l2_pixel: float = 1.0) -> Objective:
    """PEEK's DeepDream prior: tv * tv_l2 + l1_edge * l1_edge + l2_pixel * l2_pixel (weights 0 drop the term)."""
    weights = {"tv": tv, "l1_edge": l1_edge, "l2_pixel": l2_pixel}
    negative = {k: w for k, w in weights.items() if w < 0}
    if negative:
        raise ValueError(f"penalty weights must be >= 0, got {negative}")
    makers = (tv_l2, _l1_edge, _l2_pixel)
    terms = [make() if w == 1 else w * make() for w, make in zip(weights.values(), makers) if w != 0]
    return sum(terms) if terms else as_objective(0.0)


_l1_edge, _l2_pixel = l1_edge, l2_pixel  # the factories, under names penalizer's arguments do not shadow
