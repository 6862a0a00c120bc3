"""VITAL: feature visualisation of a channel guided by its real top patches (Görgün, Schiele & Fischer, "VITAL: More
Understandable Feature Visualization through Distribution Alignment and Relevant Information Flow", 2025).

Per channel c of the target layer, with reference images = its top-k patches (or top-N images), resized to the render
size:
1. relevance of c on each reference at the match layers l (synthesis.relevance: zennit's LRP composite, or Guided
   Backprop), each map scaled to [0, 1] over its positions; the importance of channel j of l for c = the reference
   mean of max_positions R_l[j], scaled to [0, 1] over the channels j;
2. target distributions: per channel j of l, the sorted values of (scaled relevance x activation) over the positions,
   averaged over the references (sorted-value matching: the 1-D optimal-transport match of two distributions);
3. the synthetic image's loss: match_weight * sum_l w_l * mean_{j,i} importance_j * (sort(R~ x a)_{j,i} - target_{j,i})^2
   with its own relevance maps recomputed each step (detached: weights, not a path for the gradient), plus
   channel_weight * the channel objective (-spatial mean of c, DORA's s-AMS objective) and TV / L2 priors.

The plain channel visualisation is the same render without the matching term (same seed, start and transforms),
so the two differ only by what VITAL adds. Both run on the one synthesis engine (render), batched over channels:
image b of a batch optimises channel c_b against c_b's references.

Measured per channel (vital.h5): the channel's spatial-mean activation on the plain image, the VITAL image and the
references (their mean); with a probe model, the cosine of each image's penultimate probe feature to the mean probe
feature of the references (faithfulness: higher = closer to the real patches), the references' own leave-one-out
value as the ceiling, and CPU seconds per channel of each render.

Render size: settings.size, else the model's crop, else its resize, else the input side a transformer insists on
(timm, torchvision: a token layer's references are a token with context, smaller than the input), else the references'.

Greyscale: where every reference has R == G == B (a model of greyscale data, e.g. digits), both renders are grey
(synthesis.param.greyscale) and `grey` records it; colour noise would show what the model never saw.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from peekflow.models.layers import get_layers, layer_names, pool, record_layers
from peekflow.models.tokens import fixed_input_side
from peekflow.prototypes.batching import per_image_param, transforms_of
from peekflow.settings import redefault, setting
from peekflow.synthesis.objective import Activations, Objective
from peekflow.synthesis.objectives import channel
from peekflow.synthesis.param import greyscale
from peekflow.synthesis.regularisers import l2_pixel, penalizer
from peekflow.synthesis.relevance import METHODS, channel_relevance, unit_range
from peekflow.synthesis.render import render
from peekflow.synthesis.settings import RenderSettings, render_options, scaled_jitter

log = logging.getLogger("peekflow")
REFERENCES = ("patches", "images")
DEFAULT_MATCH = {"conv1": 0.1, "layer1": 1.0, "layer2": 1.0, "layer3": 1.0}  # VITAL's (a ResNet's layers)


@dataclass
class VitalSettings(RenderSettings):
    channels: str | list[int] = setting("all", '"all", "start:stop" (stop exclusive) or a list of channel indices; '
                                        "each must have patches")
    reference: str = setting("patches", "reference images: the channel's top-k patches or its top-N images",
                             choices=REFERENCES)
    references: int = setting(8, "references per channel (the best ones)", minimum=1)
    relevance: str = setting("epsilon_plus_flat", "relevance rule (zennit): LRP epsilon_plus_flat, guided_backprop, "
                             "or the plain gradient", choices=METHODS)
    match_layers: dict = setting(DEFAULT_MATCH,
                                 "layer -> weight of its distribution-matching term (VITAL's defaults, a ResNet's "
                                 "layers; a transformer: earlier blocks, e.g. {blocks.0: 1, blocks.1: 1}); layers "
                                 "that do not come before the target layer are skipped")
    match_weight: float = setting(1000.0, "weight of the distribution-matching loss (0: plain channel visualisation)",
                                  minimum=0)
    channel_weight: float = setting(1.0, "weight of the channel objective (-spatial mean of the channel)", minimum=0)
    tv: float = setting(200.0, "weight of the L2 total variation prior (a mean over pixels: large weights)", minimum=0)
    l2: float = setting(0.05, "weight of the L2 pixel prior (towards mid-grey)", minimum=0)
    steps: int = redefault(RenderSettings, "steps", 96)
    lr: float = redefault(RenderSettings, "lr", 0.05)
    betas: list[float] = redefault(RenderSettings, "betas", [0.5, 0.9])
    schedule: str = redefault(RenderSettings, "schedule", "cosine")
    warmup: int = redefault(RenderSettings, "warmup", 8)
    init_std: float = redefault(RenderSettings, "init_std", 0.2)
    jitter: int | None = scaled_jitter(2, 64)
    batch_size: int = redefault(RenderSettings, "batch_size", 16)
    size: int | None = setting(None, "image side in pixels (null: the model's crop, else its resize, else the side of "
                                     "the references)", minimum=2)


@dataclass
class VitalResult:
    channels: np.ndarray  # [S]
    plain: np.ndarray  # [S,3,H,W] float32 in [0,1]
    vital: np.ndarray  # [S,3,H,W]
    references: np.ndarray  # [S,k,3,H,W] at the render size
    activation: dict  # "plain" | "vital" | "reference" -> [S]
    seconds: dict  # "plain" | "vital" -> CPU seconds per channel [S] (a batch's time shared by its channels)
    match_layers: dict  # the layers used -> weight
    similarity: dict = dataclasses.field(default_factory=dict)  # "plain" | "vital" | "reference" -> [S]
    grey: bool = False  # rendered in grey: the references are greyscale (module doc)


def match_layers_for(model: nn.Module, layer: str, wanted: dict) -> dict[str, float]:
    """The match layers that come before `layer` in module order (others skipped), checked to exist; a failure
    suggests layers of this model that come before `layer`."""
    names = layer_names(model)
    get_layers(model, [layer])  # fails naming a target layer that does not exist
    unknown = [name for name in wanted if name not in set(names)]
    if unknown:
        default = " (the defaults name a ResNet's layers)" if set(unknown) & set(DEFAULT_MATCH) else ""
        raise ValueError(f"VITAL: match layer(s) {unknown} are not layers of {type(model).__name__}{default}; set "
                         f"neurons.vital.match_layers to layers before {layer!r}, e.g. "
                         f"{earlier_layers(model, layer)}")
    before = {name: float(w) for name, w in wanted.items()
              if names.index(name) < names.index(layer) and not layer.startswith(name + ".") and w > 0}
    if not before:
        raise ValueError(f"VITAL: none of the match layers {sorted(wanted)} comes before {layer!r}; set "
                         f"neurons.vital.match_layers to earlier layers of the model, e.g. "
                         f"{earlier_layers(model, layer)}")
    return before


def earlier_layers(model: nn.Module, layer: str, most: int = 3) -> dict[str, float]:
    """Match layers to suggest for `layer`: its earlier siblings in a numbered sequence (blocks.0, blocks.1 before
    blocks.2), else the top-level layers with weights before its own (conv1, layer1, ... before layer4); the last
    `most` of them."""
    parent, _, index = layer.rpartition(".")
    if index.isdigit() and int(index) > 0:
        return {f"{parent + '.' if parent else ''}{i}": 1.0 for i in range(max(0, int(index) - most), int(index))}
    top = layer.split(".")[0]
    tops = [name for name, module in model.named_children() if any(True for _ in module.parameters())]
    return dict.fromkeys(tops[:tops.index(top)][-most:], 1.0) if top in tops else {}


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


def _sorted_weighted(relevance: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] relevance and activations -> [B,C,HW]: sorted values of (relevance in [0,1]) x activation."""
    return (unit_range(relevance) * acts).flatten(2).sort(dim=2).values


def reference_targets(model, references: torch.Tensor, layer: str, channels: list[int], layers: dict, method: str,
                      normalisation) -> tuple[dict, dict]:
    """references [S,k,3,H,W] in [0,1] -> per match layer: target sorted values [S,C_l,HW] and importance [S,C_l]."""
    s, k = references.shape[:2]
    x = _normalise(references.flatten(0, 1), *normalisation)
    rel, _ = channel_relevance(model, x, layer, np.repeat(channels, k), list(layers), method)
    with torch.no_grad(), record_layers(model, list(layers)) as acts:
        model(x)
    targets, importance = {}, {}
    for name in layers:
        a, r = acts[name].float(), rel[name].float()
        targets[name] = _sorted_weighted(r, a).view(s, k, *a.shape[1:2], -1).mean(1)
        peak = r.amax(dim=(2, 3))  # [S*k, C_l]
        importance[name] = unit_range(peak, dims=(1,)).view(s, k, -1).mean(1)
    return targets, importance


def match_objective(model, layer: str, channels: list[int], layers: dict, targets: dict, importance: dict,
                    method: str, normalisation) -> Objective:
    """VITAL's relevance-weighted sorted-value matching at `layers`, one loss per image (see the module doc)."""

    def fn(acts: Activations) -> torch.Tensor:
        x = _normalise(acts.images.detach(), *normalisation)
        rel, _ = channel_relevance(model, x, layer, channels, list(layers), method)
        loss = acts.images.new_zeros(len(acts.images))
        for name, weight in layers.items():
            a = acts(name)
            got = _sorted_weighted(rel[name].to(a), a)
            want = targets[name].to(a)
            if want.shape[-1] != got.shape[-1]:  # another size: compare the quantiles
                want = F.interpolate(want, size=got.shape[-1], mode="linear", align_corners=True)
            loss = loss + weight * (importance[name].to(a)[:, :, None] * (got - want) ** 2).mean(dim=(1, 2))
        return loss

    return Objective(fn, f"vital_match({layer}, {','.join(layers)})", frozenset(("model", n) for n in layers))


def _cpu_seconds() -> float:
    return time.process_time()


def vital_channels(model, layer: str, channels: np.ndarray, references: np.ndarray, preprocessing,
                   s: VitalSettings, device="cpu") -> VitalResult:
    """Plain and VITAL visualisations of `channels` of `layer`; references [S,k,3,P,P] uint8 or float in [0,1]."""
    # a transformer that insists on its input size gets it (its references, a token with context, are smaller)
    size = int(s.size or preprocessing.crop or preprocessing.resize or fixed_input_side(model) or references.shape[-1])
    model = model.to(device).eval()
    layers = match_layers_for(model, layer, s.match_layers)
    normalisation = (preprocessing.mean, preprocessing.std)
    refs = torch.as_tensor(references[:, :s.references]).float()
    if references.dtype == np.uint8:
        refs = refs / 255
    refs = F.interpolate(refs.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).clamp(0, 1).view(*refs.shape[:2], 3, size, size)
    grey = bool((np.diff(np.asarray(references[:, :s.references]), axis=2) == 0).all())  # R == G == B everywhere
    if grey:
        log.info("vital %s: the references are greyscale, so the visualisations are rendered in grey", layer)
    transforms = transforms_of(s.jitter_at(size), s.flip) or None
    priors = penalizer(tv=s.tv, l1_edge=0.0, l2_pixel=0.0) if s.tv else 0
    out = {"plain": [], "vital": []}
    seconds = {"plain": [], "vital": []}
    for j, start in enumerate(range(0, len(channels), s.batch_size)):
        idx = list(range(start, min(start + s.batch_size, len(channels))))
        chans = [int(c) for c in channels[idx]]
        base = s.channel_weight * channel(layer, chans) + priors
        if s.l2:
            base = base + s.l2 * l2_pixel(0.5)
        for kind in ("plain", "vital"):
            t0 = _cpu_seconds()
            objective = base
            if kind == "vital" and s.match_weight:
                targets, importance = reference_targets(model, refs[idx].to(device), layer, chans, layers,
                                                        s.relevance, normalisation)
                objective = base + s.match_weight * match_objective(model, layer, chans, layers, targets, importance,
                                                                    s.relevance, normalisation)
            param = per_image_param(s.param, idx, size, s.seed, s.init_std, device)
            result = render(objective, model, greyscale(param) if grey else param,
                            normalisation=normalisation, transforms=transforms, seed=s.seed + j, device=device,
                            **render_options(s))
            out[kind].append(result.images.float().cpu().clamp(0, 1))
            seconds[kind] += [(_cpu_seconds() - t0) / len(idx)] * len(idx)
        log.info("vital %s: batch %d/%d done (%d channels)", layer, j + 1, -(-len(channels) // s.batch_size), len(idx))
    plain, vital = torch.cat(out["plain"]), torch.cat(out["vital"])
    activation = {kind: channel_activation(model, layer, images, channels, normalisation, device)
                  for kind, images in (("plain", plain), ("vital", vital))}
    k = refs.shape[1]
    activation["reference"] = channel_activation(model, layer, refs.flatten(0, 1), np.repeat(channels, k),
                                                 normalisation, device).reshape(-1, k).mean(1)
    return VitalResult(channels=np.asarray(channels), plain=plain.numpy(), vital=vital.numpy(), references=refs.numpy(),
                       activation=activation, seconds={k: np.asarray(v) for k, v in seconds.items()},
                       match_layers=layers, grey=grey)


@torch.no_grad()
def channel_activation(model, layer: str, images: torch.Tensor, channels, normalisation, device,
                       batch: int = 256) -> np.ndarray:
    """Spatial mean of channel channels[i] of `layer` on image i."""
    out = []
    channels = torch.as_tensor(np.asarray(channels)).long()
    for start in range(0, len(images), batch):
        x = _normalise(images[start:start + batch].to(device), *normalisation)
        with record_layers(model, [layer]) as acts:
            model(x)
        mean = pool(acts[layer].float())[0]
        out.append(mean.gather(1, channels[start:start + batch, None].to(mean.device))[:, 0].cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def probe_features(probe, layer: str, images: torch.Tensor, normalisation, device, batch: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, len(images), batch):
        with record_layers(probe, [layer]) as acts:
            probe(_normalise(images[start:start + batch].to(device), *normalisation))
        out.append(pool(acts[layer].float())[0].cpu())
    return torch.cat(out)


def probe_similarity(result: VitalResult, probe, layer: str, normalisation, device) -> dict:
    """Cosine of each image's probe feature to the mean probe feature of its channel's references; for the references
    themselves, each one's cosine to the mean of the others (leave-one-out), averaged: the ceiling."""
    refs = torch.as_tensor(result.references)
    s, k = refs.shape[:2]
    ref = probe_features(probe, layer, refs.flatten(0, 1), normalisation, device).view(s, k, -1)
    centre = ref.mean(1)
    out = {kind: F.cosine_similarity(probe_features(probe, layer, torch.as_tensor(getattr(result, kind)),
                                                    normalisation, device), centre, dim=1).numpy()
           for kind in ("plain", "vital")}
    if k > 1:
        others = (ref.sum(1, keepdim=True) - ref) / (k - 1)
        out["reference"] = F.cosine_similarity(ref, others, dim=2).mean(1).numpy()
    else:
        out["reference"] = np.full(s, np.nan, np.float32)
    return out
