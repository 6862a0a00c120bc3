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

from dataclasses import asdict, dataclass, field

from torch import nn

from peekflow.data.folder import Preprocessing
from peekflow.device import resolve_device
from peekflow.prototypes.batching import (as_prototypes, render_in_batches, repeat_each, resolve_classes,
                                          resolve_size, transforms_of)
from peekflow.prototypes.store import Prototypes
from peekflow.synthesis.objectives import class_logit, cross_entropy
from peekflow.synthesis.regularisers import penalizer


TARGET_LOSSES = {"logit": class_logit, "log_softmax": cross_entropy}


@dataclass
class DreamSettings:
    classes: str | list = "all"  # "all" or a list of class indices
    per_class: int = 2  # M prototypes per class
    size: int | None = None  # None: the model's crop, else its resize
    steps: int = 200
    lr: float = 0.05
    optimizer: str = "adam"  # adam | adamw
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine
    warmup: int = 0
    grad_clip: float | None = None
    tv: float = 1.0  # weight of tv_l2 (PEEK's total-variation term)
    l1_edge: float = 1.0
    l2_pixel: float = 1.0
    target_loss: str = "logit"  # logit (PEEK) | log_softmax (the target's log-probability)
    param: str = "pixel"  # pixel (clamped) | fourier
    init_std: float = 0.01
    jitter: int = 0  # px; 0 = off
    flip: bool = False
    batch_size: int = 64  # prototypes rendered together
    seed: int = 0
    device: str = "auto"
    amp: bool = False

    def __post_init__(self):
        if self.per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {self.per_class}")
        if self.target_loss not in TARGET_LOSSES:
            raise ValueError(f"target_loss {self.target_loss!r} not in {sorted(TARGET_LOSSES)}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")


def make_deepdream(model: nn.Module, classes: list[str], preprocessing: Preprocessing, settings: DreamSettings,
                   name: str = "") -> Prototypes:
    s = settings
    size = resolve_size(s.size, preprocessing)
    targets = repeat_each(resolve_classes(s.classes, len(classes)), s.per_class)
    prior = penalizer(s.tv, s.l1_edge, s.l2_pixel)
    target_loss = TARGET_LOSSES[s.target_loss]
    images, losses, render_settings = render_in_batches(
        targets, s.batch_size, lambda batch: target_loss(batch) + prior, model, preprocessing,
        param=s.param, size=size, seed=s.seed, init_std=s.init_std, transforms=transforms_of(s.jitter, s.flip),
        device=resolve_device(s.device), what="deepdream", steps=s.steps, lr=s.lr, optimizer=s.optimizer,
        betas=s.betas, weight_decay=s.weight_decay, schedule=s.schedule, warmup=s.warmup, grad_clip=s.grad_clip,
        amp=s.amp)
    recorded = asdict(s) | {"size": size, "objective": f"{target_loss(targets[:1]).description} + {prior.description}"}
    return as_prototypes("deepdream", name, classes, images, targets, losses, recorded, render_settings)
