"""Objectives on what a model computes: class logits, channels, single units, whole layers, directions, caricatures.

Every factory returns an `Objective` giving one loss per image [B] to MINIMISE, so each activation to raise enters
with a minus sign. `c` / `target` is one index for every image or a list / 1-D LongTensor with one per image (one
batch renders many classes or channels at once). A layer output is [B,C,H,W], tokens [B,T,C] or [B,C]; "spatial mean"
averages over H,W (or T), as `peekflow.models.layers.pool` does. Several models: name them with `model=` and add.

    class_logit(k)         -z_k                                      logit maximisation (PEEK's DeepDream prototypes)
    cross_entropy(k)       -log softmax(z)_k                         DeepInversion's main term (per image, not mean)
    channel(l, c)          -mean_{h,w} a[c,h,w]
    unit(l, c, y, x)       -a[c,y,x]                                 (y, x) defaults to the centre
    layer_activation(l)    -mean a^2                                 DeepDream (Mordvintsev et al., 2015)
    direction(l, v)        -<mean_{h,w} a, v>                        v: [C] or one per image [B,C]
    caricature(l, t)       -<a, s> * max(cos(a, s), 0.1)^p,  s = amplify * t, both flattened per image
    competition(a, b)      1 - JS(softmax z_a, softmax z_b)          ADI's competition term (Yin et al. 2020): low
                                                                     where the two models (teacher, student) disagree
    custom(fn, desc)       any callable acts -> [B]

Caricature (Lucid's "caricatures" notebook, Olah et al.): `t` is the layer's response to a reference image; the
dot product rewards a large response along s, the cosine (floored at 0.1, as Lucid floors it, so an anti-aligned
response never earns a negative-times-negative reward and non-integer powers stay defined) makes the direction
matter more as p grows. `amplify` scales s and hence, for this loss, the term's weight against the regularisers:
the loss has no optimum in the response's norm, which is what exaggerates the reference's features.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from peekflow.models.layers import pool
from peekflow.synthesis.objective import DEFAULT_MODEL, Activations, Objective, objective

COSINE_FLOOR = 0.1


def _at(model: str) -> str:
    return "" if model == DEFAULT_MODEL else f"@{model}"


class _PerImage:
    """An index (class, channel) shared by every image or given per image; `take(x)` reads x[b, index_b]."""

    def __init__(self, value, what: str):
        self.what = what
        if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
            value = int(value)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)
            self.value, self.top, self.low = value, value, value
        else:
            t = torch.as_tensor(value)
            if t.ndim != 1 or t.numel() == 0 or t.is_floating_point():
                raise ValueError(f"{what} must be an int or a non-empty 1-D list/LongTensor of ints, got {value!r}")
            self.value, self.top, self.low = t.long(), int(t.max()), int(t.min())
        if self.low < 0:
            raise ValueError(f"{what} must be >= 0, got {value!r}")

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N] -> [B]."""
        if self.top >= x.shape[1]:
            raise ValueError(f"{self.what} {self.top} out of range: only {x.shape[1]} available")
        if isinstance(self.value, int):
            return x[:, self.value]
        if len(self.value) != x.shape[0]:
            raise ValueError(f"{self.what} lists {len(self.value)} values for a batch of {x.shape[0]} images")
        if self.value.device != x.device:
            self.value = self.value.to(x.device)
        return x.gather(1, self.value[:, None])[:, 0]

    def __str__(self) -> str:
        if isinstance(self.value, int):
            return str(self.value)
        v = self.value.tolist()
        return "[" + ",".join(map(str, v[:6])) + (",...]" if len(v) > 6 else "]")


def class_logit(target, model: str = DEFAULT_MODEL) -> Objective:
    t = _PerImage(target, "target class")

    @objective(f"-logit({t}){_at(model)}")
    def fn(acts: Activations):
        return -t.take(acts.logits_of(model))

    return fn


def cross_entropy(target, model: str = DEFAULT_MODEL) -> Objective:
    t = _PerImage(target, "target class")

    @objective(f"ce({t}){_at(model)}")
    def fn(acts: Activations):
        z = acts.logits_of(model)
        return -t.take(F.log_softmax(z.to(torch.promote_types(z.dtype, torch.float32)), dim=1))

    return fn


def competition(student: str, teacher: str = DEFAULT_MODEL) -> Objective:
    """1 - the Jensen-Shannon divergence (natural log) between the two models' class distributions, per image."""

    @objective(f"1 - js({teacher}, {student})")
    def fn(acts: Activations):
        logp, logq = (F.log_softmax(acts.logits_of(m).float(), dim=1) for m in (teacher, student))
        logm = torch.logsumexp(torch.stack([logp, logq]), dim=0) - math.log(2.0)
        js = 0.5 * ((logp.exp() * (logp - logm)).sum(1) + (logq.exp() * (logq - logm)).sum(1))
        return 1.0 - js

    return fn


def channel(layer: str, c, model: str = DEFAULT_MODEL) -> Objective:
    ch = _PerImage(c, f"channel of {layer!r}")

    @objective(f"-channel({layer}, {ch}){_at(model)}", [(model, layer)])
    def fn(acts: Activations):
        return -ch.take(pool(acts(layer, model))[0])

    return fn


def unit(layer: str, c, y: int | None = None, x: int | None = None, model: str = DEFAULT_MODEL) -> Objective:
    ch = _PerImage(c, f"channel of {layer!r}")
    where = "centre" if y is None and x is None else f"y={y}, x={x}"

    @objective(f"-unit({layer}, {ch}, {where}){_at(model)}", [(model, layer)])
    def fn(acts: Activations):
        a = acts(layer, model)
        if a.ndim != 4:
            raise ValueError(f"unit() needs a [B,C,H,W] output; {layer!r} gives {tuple(a.shape)}")
        h, w = a.shape[2:]
        yy, xx = h // 2 if y is None else y, w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise ValueError(f"unit position (y={yy}, x={xx}) outside {layer!r}'s {h}x{w} map")
        return -ch.take(a[:, :, yy, xx])

    return fn


def layer_activation(layer: str, model: str = DEFAULT_MODEL) -> Objective:
    @objective(f"-mean_sq({layer}){_at(model)}", [(model, layer)])
    def fn(acts: Activations):
        return -acts(layer, model).flatten(1).pow(2).mean(1)

    return fn


def direction(layer: str, vector: torch.Tensor, model: str = DEFAULT_MODEL) -> Objective:
    v = torch.as_tensor(vector).detach()

    @objective(f"-direction({layer}){_at(model)}", [(model, layer)])
    def fn(acts: Activations):
        a = pool(acts(layer, model))[0]
        if v.shape[-1] != a.shape[1]:
            raise ValueError(f"direction has {v.shape[-1]} entries but {layer!r} has {a.shape[1]} channels")
        return -(a * v.to(a)).sum(1)

    return fn


def caricature(layer: str, target_acts: torch.Tensor, amplify: float = 1.0, cos_power: float = 1.0,
               model: str = DEFAULT_MODEL, loss: str = "dot") -> Objective:
    """`target_acts`: the layer's response to the reference image(s), [1, ...] (shared) or [B, ...] (per image);
    t = amplify * target_acts.

    loss "dot"   (Lucid): -<a, t> * cos(a, t)**cos_power -- unbounded, so the response grows along t; amplify only
                 scales the loss (which Adam ignores unless other terms are added)
    loss "match": ||a - t||^2 / ||t||^2 -- the response is pulled to the amplified target itself"""
    if loss not in ("dot", "match"):
        raise ValueError(f"caricature loss must be dot or match, got {loss!r}")
    target_acts = torch.as_tensor(target_acts).detach()
    if target_acts.ndim < 2:
        raise ValueError(f"caricature target needs a batch dimension ([1, ...] or [B, ...]), "
                         f"got {tuple(target_acts.shape)}")
    s = amplify * target_acts.flatten(1)
    desc = f"cos^{cos_power:g}" if loss == "dot" else "match"

    @objective(f"-caricature({layer}, x{amplify:g}, {desc}){_at(model)}", [(model, layer)])
    def fn(acts: Activations):
        a = acts(layer, model).flatten(1)
        if a.shape[1] != s.shape[1] or s.shape[0] not in (1, a.shape[0]):
            raise ValueError(f"caricature target {tuple(target_acts.shape)} does not fit {layer!r}'s output "
                             f"{tuple(acts(layer, model).shape)} (give [1, ...] or one per image)")
        t = s.to(a)
        if loss == "match":
            return (a - t).pow(2).sum(1) / t.pow(2).sum(1).clamp_min(1e-12)
        dot = (a * t).sum(1)
        if cos_power == 0:
            return -dot
        cos = F.cosine_similarity(a, t.expand_as(a), dim=1).clamp_min(COSINE_FLOOR)
        return -dot * cos.pow(cos_power)

    return fn


def custom(fn: Callable[[Activations], torch.Tensor], description: str,
           layers: Sequence[str | tuple[str, str]] = (), needs: Sequence[str] = ()) -> Objective:
    """Any `acts -> [B]` loss; `layers` lists what it reads: (model, layer) pairs or DEFAULT_MODEL's layer names."""
    pairs = [(DEFAULT_MODEL, item) if isinstance(item, str) else tuple(item) for item in layers]
    return Objective(fn, description, frozenset(pairs), frozenset(needs))
