"""PEEK's DeepDream class prototypes (What Neural Networks Know, github.com/gabobaCS/what-neural-networks-know,
wnnnk_core/deep_dream.py): per image, minimise

    -logit_target(normalise(x)) + tv * tv_l2(x) + l1_edge * l1_edge(x) + l2_pixel * l2_pixel(x)

`target_loss: log_softmax` replaces the raw logit by the class's log-probability, -log softmax(z)_target: raising
one logit can raise a rival's faster (on the embedded default, every "crescent" logit prototype was classified
"ring"), whereas the log-probability asks for the target to win. The raw logit stays the default, as in PEEK.

over the [0,1] image x (normalised with the model's own mean/std inside the loop, never optimised un-normalised),
with Adam and the pixels clamped to [0,1] after each step, M prototypes per class.

Defaults and their sources: lr 0.05, Adam, Penalizer weights tv = l1_edge = l2_pixel = 1.0, pixel parameterisation
with clamping, no jitter/flip: PEEK's `Dreamer.dream_batch` / `Penalizer` defaults. steps 200: PEEK's default is 100
iterations; 200 leaves margin for the 10-class embedded models and is a setting. init_std 0.01: start near mid-grey
(param.pixel's default; PEEK starts from the base images its caller passes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from peekflow.data.folder import Preprocessing
from peekflow.device import resolve_device
from peekflow.prototypes.batching import (as_prototypes, render_in_batches, repeat_each, resolve_classes,
                                          resolve_size)
from peekflow.prototypes.store import Prototypes
from peekflow.settings import setting
from peekflow.shards import BatchPlan
from peekflow.synthesis.objectives import class_logit, cross_entropy
from peekflow.synthesis.regularisers import penalizer
from peekflow.synthesis.settings import RenderSettings


TARGET_LOSSES = {"logit": class_logit, "log_softmax": cross_entropy}


@dataclass
class DreamSettings(RenderSettings):
    classes: str | list[int] = setting("all", '"all" or a list of class indices', choices=["all"])
    per_class: int = setting(2, "prototypes per class", minimum=1)
    tv: float = setting(1.0, "weight of the L2 total variation (PEEK's TV term)", minimum=0)
    l1_edge: float = setting(1.0, "weight of PEEK's L1-edge penalty", minimum=0)
    l2_pixel: float = setting(1.0, "weight of PEEK's L2-pixel penalty", minimum=0)
    target_loss: str = setting("logit", "logit (PEEK: minus the raw class logit) or log_softmax (minus the class's "
                                        "log-probability)", choices=TARGET_LOSSES)


def dream_targets(s: DreamSettings, num_classes: int) -> list[int]:
    """The output unit of every prototype: `per_class` of each chosen class, class-major."""
    return repeat_each(resolve_classes(s.classes, num_classes), s.per_class)


def make_deepdream(model: nn.Module, classes: list[str], preprocessing: Preprocessing, settings: DreamSettings,
                   name: str = "", device="auto", plan: BatchPlan | None = None) -> Prototypes:
    s = settings
    size = resolve_size(s.size, preprocessing)
    targets = dream_targets(s, len(classes))
    prior = penalizer(s.tv, s.l1_edge, s.l2_pixel)
    target_loss = TARGET_LOSSES[s.target_loss]
    images, losses, render_settings = render_in_batches(
        targets, lambda batch: target_loss(batch) + prior, model, preprocessing, s, size=size,
        device=resolve_device(device), what="deepdream", plan=plan)
    recorded = asdict(s) | {"size": size, "objective": f"{target_loss(targets[:1]).description} + {prior.description}"}
    return as_prototypes("deepdream", name, classes, images, targets, losses, recorded, render_settings, plan)
