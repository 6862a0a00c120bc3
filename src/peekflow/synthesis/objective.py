"""Objectives: small composable objects that turn a forward pass into a per-image loss to minimise.

An `Objective` wraps `fn(acts: Activations) -> Tensor[B]` and declares which (model, layer) outputs it reads, so the
render loop hooks only those. Objectives compose: `a + b`, `a - b`, `2.0 * a`, `a / 4`, `-a`; the composite reads
the union of the layers and its description says what is optimised ("-logit(3) + 0.1 * tv_l2").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

DEFAULT_MODEL = "model"


@dataclass
class Activations:
    """What an objective sees of one step: the (transformed) images in [0,1] fed to the models, each model's
    logits, and the recorded outputs of the layers the objective declared."""

    images: torch.Tensor  # [B, 3, H, W], in [0, 1], before the models' input normalisation
    logits: dict[str, torch.Tensor]  # model name -> [B, K]
    layers: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)  # (model, layer) -> output
    extras: dict[str, object] = field(default_factory=dict)  # e.g. batch-norm statistics losses

    def __call__(self, layer: str, model: str = DEFAULT_MODEL) -> torch.Tensor:
        try:
            return self.layers[(model, layer)]
        except KeyError:
            raise KeyError(f"layer {layer!r} of model {model!r} was not recorded; recorded: {sorted(self.layers)}")

    def logits_of(self, model: str = DEFAULT_MODEL) -> torch.Tensor:
        return self.logits[model]


class Objective:
    def __init__(self, fn: Callable[[Activations], torch.Tensor], description: str,
                 layers: frozenset[tuple[str, str]] = frozenset(), needs: frozenset[str] = frozenset()):
        self.fn, self.description = fn, description
        self.layers = frozenset(layers)  # (model, layer) outputs to record
        self.needs = frozenset(needs)  # extra per-step services, e.g. {"bn_stats"}

    def __call__(self, acts: Activations) -> torch.Tensor:
        loss = self.fn(acts)
        if loss.ndim != 1:
            raise ValueError(f"objective {self.description!r} must return one loss per image, got {tuple(loss.shape)}")
        return loss

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    # --- algebra ------------------------------------------------------------------------------------------------
    def _join(self, other: "Objective", fn, desc: str) -> "Objective":
        return Objective(fn, desc, self.layers | other.layers, self.needs | other.needs)

    def __add__(self, other):
        other = as_objective(other)
        return self._join(other, lambda a: self(a) + other(a), f"{self.description} + {other.description}")

    def __radd__(self, other):
        if other == 0:  # sum([...]) starts from 0
            return self
        return as_objective(other) + self

    def __sub__(self, other):
        other = as_objective(other)
        return self._join(other, lambda a: self(a) - other(a), f"{self.description} - ({other.description})")

    def __neg__(self):
        return Objective(lambda a: -self(a), f"-({self.description})", self.layers, self.needs)

    def __mul__(self, w: float):
        if not isinstance(w, (int, float)):
            raise TypeError("an objective can be multiplied by a number only")
        return Objective(lambda a: w * self(a), f"{w:g} * {self.description}", self.layers, self.needs)

    __rmul__ = __mul__

    def __truediv__(self, w: float):
        return self * (1.0 / w)


def as_objective(x) -> Objective:
    if isinstance(x, Objective):
        return x
    if isinstance(x, (int, float)):
        return Objective(lambda a: torch.full((a.images.shape[0],), float(x), device=a.images.device), f"{x:g}")
    raise TypeError(f"cannot combine an objective with {type(x).__name__}")


def objective(description: str, layers=(), needs=()):
    """Decorator for objective factories' inner functions: `@objective("channel(layer4, 3)", [("model", "layer4")])`."""

    def wrap(fn):
        return Objective(fn, description, frozenset(layers), frozenset(needs))

    return wrap
