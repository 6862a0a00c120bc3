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


class _Priors(torch.autograd.Function):
    """Per image: w_l1 * (mean|dx| + mean|dy|) + w_l2 * (mean dx^2 + mean dy^2) + w_px * mean (x - centre)^2.

    Every prior is one call of this function, with its gradient written out: autograd through the four slices of
    dx and dy would allocate and zero a full image per slice and step, most of the cost of the prior in a render
    step (tests check the gradient numerically)."""

    @staticmethod
    def forward(ctx, x, w_l1: float, w_l2: float, w_px: float, centre: float):
        if x.ndim != 4:
            raise ValueError(f"image priors need images [B,C,H,W], got {tuple(x.shape)}")
        diffs = [x.narrow(dim, 1, x.shape[dim] - 1) - x.narrow(dim, 0, x.shape[dim] - 1) for dim in (3, 2)]
        out = x.new_zeros(x.shape[0])
        for d in diffs:
            flat = d.flatten(1)
            if w_l1:
                out += (w_l1 / flat.shape[1]) * torch.linalg.vector_norm(flat, 1, dim=1)
            if w_l2:
                out += (w_l2 / flat.shape[1]) * torch.linalg.vector_norm(flat, 2, dim=1) ** 2
        if w_px:
            flat = (x - centre if centre else x).flatten(1)
            out += (w_px / flat.shape[1]) * torch.linalg.vector_norm(flat, 2, dim=1) ** 2
        ctx.save_for_backward(x, *diffs)
        ctx.weights = (w_l1, w_l2, w_px, centre)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, *diffs = ctx.saved_tensors
        w_l1, w_l2, w_px, centre = ctx.weights
        g = grad.view(-1, 1, 1, 1)
        if w_px:  # d/dx of w mean (x - c)^2 = 2 w (x - c) / n
            out = (x - centre if centre else x) * (g * (2 * w_px / x[0].numel()))
        else:
            out = torch.zeros_like(x)
        for dim, d in zip((3, 2), diffs):  # d_i = x_{i+1} - x_i: dL/dd_i enters at i + 1 with +, at i with -
            n = d[0].numel()
            gd = d * (g * (2 * w_l2 / n)) if w_l2 else torch.zeros_like(d)
            if w_l1:
                gd.addcmul_(d.sign(), g, value=w_l1 / n)
            out.narrow(dim, 1, d.shape[dim]).add_(gd)
            out.narrow(dim, 0, d.shape[dim]).sub_(gd)
        return out, None, None, None, None


def _prior(description: str, l1: float = 0.0, l2: float = 0.0, pixel: float = 0.0, centre: float = 0.0):
    @objective(description)
    def fn(acts: Activations):
        return _Priors.apply(acts.images, float(l1), float(l2), float(pixel), float(centre))

    return fn


def tv_l1() -> Objective:
    return _prior("tv_l1", l1=1.0)


def tv_l2() -> Objective:
    return _prior("tv_l2", l2=1.0)


def l1_edge() -> Objective:
    return _prior("l1_edge", l1=1.0)


def l2_pixel(centre: float = 0.0) -> Objective:
    return _prior("l2_pixel" if centre == 0 else f"l2_pixel(centre={centre:g})", pixel=1.0, centre=centre)


def penalizer(tv: float = 1.0, l1_edge: float = 1.0, l2_pixel: float = 1.0) -> Objective:
    """PEEK's DeepDream prior: tv * tv_l2 + l1_edge * l1_edge + l2_pixel * l2_pixel (weights 0 drop the term), one
    pass over the images for the three terms."""
    weights = {"tv": tv, "l1_edge": l1_edge, "l2_pixel": l2_pixel}
    negative = {k: w for k, w in weights.items() if w < 0}
    if negative:
        raise ValueError(f"penalty weights must be >= 0, got {negative}")
    names = [(w, name) for w, name in zip(weights.values(), ("tv_l2", "l1_edge", "l2_pixel")) if w != 0]
    if not names:
        return as_objective(0.0)
    description = " + ".join(name if w == 1 else f"{w:g} * {name}" for w, name in names)
    return _prior(description, l1=l1_edge, l2=tv, pixel=l2_pixel)
