"""Adversarial trajectory (Li et al. 2021, Sec. 4): a PGD attack on a few analysed images, and the path of their sample
and regional embeddings, step by step, through every analysed layer.

PGD (L-inf, untargeted): x_(t+1) = clip_[x0 - eps, x0 + eps] intersect [0, 1](x_t + alpha sign(grad CE(f(x_t), y))),
from x0 (no random start). It runs on the synthesis engine (peekflow.synthesis.render), one call for the attack: the
objective is minus the cross-entropy of the true class; the parameterisation is the image itself, projected onto
the eps-ball after each step, where each step's image is recorded; the optimiser is Adam with betas (0, 0), whose
step alpha g / (|g| + 1e-8) is alpha sign(g) -- exactly, as the objective is scaled by SIGN_SCALE so that Adam's 1e-8
is negligible against any non-zero gradient.
Each step's layer maps go through the analysis's fitted maps (M, Lambda) and class mixtures; a region counts as a
knowledge point by the analysis's threshold and the original image's region weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from peekflow.data.folder import Preprocessing
from peekflow.device import resolve_device
from peekflow.emergence.data import region_grid
from peekflow.emergence.files import LayerFile
from peekflow.emergence.knowledge import knowledge_points
from peekflow.models.layers import record_layers
from peekflow.settings import Settings, redefault, setting
from peekflow.synthesis.objectives import cross_entropy
from peekflow.synthesis.param import Param
from peekflow.synthesis.render import render
from peekflow.synthesis.settings import RenderSettings

log = logging.getLogger("peekflow.emergence")

SIGN_SCALE = 1e8


@dataclass
class TrajectorySettings(Settings):
    images: int = setting(4, "attacked images: analysed samples of distinct classes first (seeded)", minimum=1)
    eps: float = setting(0.03, "L-inf radius, [0, 1] pixel units", minimum=0)
    steps: int = setting(10, "PGD steps", minimum=0)
    alpha: float = setting(0.005, "step size, [0, 1] pixel units", exclusive_minimum=0)
    seed: int = setting(0, "seed of the choice of images", minimum=0)
    fold_bn: bool = redefault(RenderSettings, "fold_bn")
    channels_last: bool = redefault(RenderSettings, "channels_last")


def choose_images(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices into the analysed samples: one image of each of n seeded classes (more per class if n > classes)."""
    if n < 1:
        raise ValueError(f"trajectory images must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    picked, seen = [], set()
    for i in order:  # distinct classes first
        if labels[i] not in seen:
            picked.append(i)
            seen.add(labels[i])
    picked += [i for i in order if i not in picked]
    return np.array(sorted(picked[:n]))


def load_images(paths: list[str], prep: Preprocessing) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1]: the model's resize and crop, not its normalisation."""
    out = []
    for path in paths:
        with Image.open(path) as img:
            out.append(prep.pixels(img.convert("RGB")))
    return torch.stack(out)


def ball_param(centre: torch.Tensor, eps: float, frames: list) -> Param:
    """The image itself, from `centre`, projected onto [centre - eps, centre + eps] intersect [0, 1] after each step;
    each projected image is appended to `frames`."""
    raw = centre.detach().clone().requires_grad_(True)
    low, high = (centre - eps).clamp(0, 1), (centre + eps).clamp(0, 1)

    def project():
        with torch.no_grad():
            raw.copy_(torch.minimum(torch.maximum(raw, low), high))
            frames.append(raw.detach().clone())

    return Param([raw], lambda: raw, project, description=f"linf_ball(eps={eps:g})")


def pgd_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, prep: Preprocessing,
              s: TrajectorySettings, device) -> list[torch.Tensor]:
    """[x0, x1, ..., x_steps] of the attack."""
    if s.eps < 0 or s.alpha <= 0 or s.steps < 0:
        raise ValueError(f"PGD needs eps >= 0, alpha > 0, steps >= 0; got {s.eps}, {s.alpha}, {s.steps}")
    centre = images.to(device)
    frames = [centre]
    objective = -SIGN_SCALE * cross_entropy(labels.to(device))
    result = render(objective, model, ball_param(centre, s.eps, frames), steps=s.steps, lr=s.alpha,
                    betas=(0.0, 0.0), normalisation=(prep.mean, prep.std), seed=s.seed, device=device,
                    fold_bn=s.fold_bn, channels_last=s.channels_last)
    # history[t] is the loss at x_t; the loss at x_steps is the final one
    losses = [*result.history[1:], result.losses.mean().item()][:s.steps]
    for step, loss in enumerate(losses):
        log.info("PGD step %d/%d: mean cross-entropy %.4f", step + 1, s.steps, -loss / SIGN_SCALE)
    return frames


@torch.no_grad()
def read_frames(model: nn.Module, frames: list[torch.Tensor], prep: Preprocessing, files: list[LayerFile],
                picks: np.ndarray, device) -> dict:
    """Per step: logits, and per layer the sample and regional embeddings and knowledge points of the images."""
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (prep.mean, prep.std))
    layers = [f.layer for f in files]
    out = {"logits": [], "sample": [], "regions": [], "kp_mask": [], "kp_class": []}
    with record_layers(model, layers) as acts:
        for x in frames:
            out["logits"].append(model((x - mean) / std).float().cpu())
            per_layer = {k: [] for k in ("sample", "regions", "kp_mask", "kp_class")}
            for f in files:
                maps = acts[f.layer].float().cpu()
                regions = f.embed_regions(region_grid(maps, int(f.settings["grid"]), f"map of {f.layer!r}"))
                points = knowledge_points(regions, f.mixture, f.settings["threshold"], f.region_weights[picks],
                                          f.settings["min_weight"])
                per_layer["sample"].append(f.embed_sample(maps.mean(dim=(2, 3))))
                per_layer["regions"].append(regions)
                per_layer["kp_mask"].append(points.mask)
                per_layer["kp_class"].append(points.classes)
            for k, v in per_layer.items():
                out[k].append(torch.stack(v))
    # logits [S+1, B, Y]; sample [L, S+1, B, d]; regions [L, S+1, B, R, d]; kp_* [L, S+1, B, R]
    return {"logits": torch.stack(out["logits"]).numpy(),
            **{k: torch.stack(out[k], dim=1).numpy() for k in ("sample", "regions", "kp_mask", "kp_class")}}


def adversarial_trajectory(model: nn.Module, prep: Preprocessing, files: list[LayerFile],
                           s: TrajectorySettings, device="auto") -> dict:
    """Attack `s.images` of the analysed samples (the files of one analysis, shallow to deep) and trace them."""
    first = files[0]
    for f in files[1:]:
        if not np.array_equal(f.rows, first.rows):
            raise ValueError(f"emergence files of {first.layer!r} and {f.layer!r} analysed different images: "
                             "rerun peekflow emergence for all layers at once")
    device = resolve_device(device)
    model = model.to(device).eval()
    picks = choose_images(first.labels, s.images, s.seed)
    labels = torch.from_numpy(first.labels[picks])
    images = load_images([first.paths[i] for i in picks], prep)
    frames = pgd_steps(model, images, labels, prep, s, device)
    traced = read_frames(model, frames, prep, files, picks, device)
    kp_true = traced["kp_mask"] & (traced["kp_class"] == labels.numpy()[None, None, :, None])
    probs = torch.softmax(torch.from_numpy(traced["logits"]), dim=-1).numpy()
    return {**traced, "picks": picks, "rows": first.rows[picks], "labels": labels.numpy(),
            "paths": [first.paths[i] for i in picks], "adversarial": frames[-1].cpu().numpy(),
            "toward_true": kp_true.sum(axis=(2, 3)), "toward_other": (traced["kp_mask"] & ~kp_true).sum(axis=(2, 3)),
            "true_prob": np.take_along_axis(probs, labels.numpy()[None, :, None], axis=2)[..., 0]}
