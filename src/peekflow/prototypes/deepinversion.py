"""DeepInversion class prototypes (Yin et al., "Dreaming to Distill", CVPR 2020; github.com/NVlabs/DeepInversion)
as PEEK uses them for its data-free KNN reference bank. Per batch of B images, minimise

    sum_b [ CE(target_b) + (r_feature * B) * R_feature / B + tv_l1 * tv_l1(x_b) + tv_l2 * tv_l2(x_b)
            + l2 * l2_pixel(x_b, centre 0.5) ]

on random jitter/flip of the [0,1] images x (normalised by the model's mean/std inside the loop), with Adam
betas (0.5, 0.9), a linear warm-up then cosine decay, and the pixels clipped to [0,1] after each step.

Convention mapping (peekflow's losses are summed over images; DeepInversion's is the batch mean CE plus batch-level
terms): sum_b CE_b + (r_feature * B) * sum_b R/B = B * (mean CE + r_feature * R), i.e. exactly B times DeepInversion's
loss, so `r_feature` is DeepInversion's own coefficient and the recorded per-image loss is CE_b + r_feature * R.
Adam is invariant to that overall factor B. R_feature = sum over BN layers of ||mu - running_mean||_2 +
||var - running_var||_2, the first BN weighted `first_layer_multiplier` (peekflow.synthesis.bn_stats).

Defaults and their sources:
- r_feature 0.01, first_layer_multiplier 10, Adam betas (0.5, 0.9), jitter 30 px at 224 px (scaled with the size),
  random flip, amp on CUDA: NVlabs/DeepInversion's imagenet_inversion.py and README command (`--r_feature=0.01`,
  `--first_bn_multiplier 10`). PEEK's copy uses r_feature 0.05 and no first-layer multiplier.
- lr 0.05: DeepInversion optimises the *normalised* input with lr 0.2 (script default, PEEK) to 0.25 (README), which
  is 0.2..0.25 * std ~= 0.045..0.056 in [0,1] pixel units for ImageNet's std ~0.225 (and the embedded models' 0.25).
- init_std 0.22: DeepInversion starts from randn in normalised units, i.e. about 0.225 in pixel units (here around
  mid-grey rather than the data mean).
- warmup 10, cosine: DeepInversion's lr_cosine_policy warms up 100 of 2000 iterations (5%); 10 of the 200 steps here.
- steps 200 (DeepInversion: 2000 at 224 px; 200 suffice at the embedded 64 px models).
- tv_l1 0, tv_l2 1.0, l2 0: DeepInversion's priors are Frobenius norms over the whole batch of the normalised
  input (weights 0 / 1e-4 / 1e-5); their gradient per pixel scales as 1/sqrt(#pixels), not like peekflow's per-image
  means, so the weights do not carry over. Its l2 term is negligible at those weights (off here); tv_l2 = 1.0 is
  peekflow's per-image TV weight of PEEK's Penalizer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from peekflow.data.folder import Preprocessing
from peekflow.device import resolve_device
from peekflow.prototypes.batching import as_prototypes, render_in_batches, resolve_classes, resolve_size
from peekflow.prototypes.store import Prototypes
from peekflow.settings import redefault, setting
from peekflow.shards import BatchPlan
from peekflow.synthesis.bn_stats import batch_norms, bn_statistics
from peekflow.synthesis.objectives import cross_entropy
from peekflow.synthesis.regularisers import l2_pixel, tv_l1, tv_l2
from peekflow.synthesis.settings import RenderSettings, scaled_jitter

TARGET_MODES = ("cycle", "random", "one")
@dataclass
class InversionSettings(RenderSettings):
    betas: list[float] = redefault(RenderSettings, "betas", [0.5, 0.9])
    schedule: str = redefault(RenderSettings, "schedule", "cosine")
    warmup: int = redefault(RenderSettings, "warmup", 10)
    init_std: float = redefault(RenderSettings, "init_std", 0.22)
    jitter: int | None = scaled_jitter(30, 224)  # DeepInversion's 30 px at 224 px
    flip: bool = redefault(RenderSettings, "flip", True)
    amp: bool = redefault(RenderSettings, "amp", True)
    targets: str = setting("cycle", "cycle (through `classes`), random (seeded, uniform over `classes`) or one "
                                    "(`target` only)", choices=TARGET_MODES)
    target: int | None = setting(None, "the class index of targets \"one\"", minimum=0)
    classes: str | list[int] = setting("all", '"all" or a list of class indices (for cycle and random)',
                                       choices=["all"])
    n: int | None = setting(None, "number of prototypes (null: per_class * number of classes)", minimum=1)
    per_class: int = setting(2, "prototypes per class", minimum=1)
    r_feature: float = setting(0.01, "weight of the batch-norm statistics loss (DeepInversion's coefficient)",
                               minimum=0)
    first_layer_multiplier: float = setting(10.0, "extra weight of the first batch norm's statistics", minimum=0)
    tv_l1: float = setting(0.0, "weight of the L1 total variation", minimum=0)
    tv_l2: float = setting(1.0, "weight of the L2 total variation", minimum=0)
    l2: float = setting(0.0, "weight of the L2 distance to mid-grey", minimum=0)

    def __post_init__(self):
        super().__post_init__()
        if self.targets == "one" and self.target is None:
            raise ValueError('targets "one" needs `target`, the class index to invert')
        if self.targets != "one" and self.target is not None:
            raise ValueError(f'`target` is only used with targets "one" (targets is {self.targets!r})')


def inversion_targets(s: InversionSettings, num_classes: int) -> list[int]:
    """cycle: c0, c1, ..., c0, c1, ...; random: uniform over the classes from a generator seeded `seed`;
    one: `target` n times. n defaults to per_class * (number of classes drawn from)."""
    if s.targets == "one":
        (target,) = resolve_classes([s.target], num_classes)
        return [target] * (s.n or s.per_class)
    pool = resolve_classes(s.classes, num_classes)
    n = s.n or s.per_class * len(pool)
    if s.targets == "cycle":
        return [pool[i % len(pool)] for i in range(n)]
    draws = torch.randint(len(pool), (n,), generator=torch.Generator().manual_seed(s.seed))
    return [pool[i] for i in draws.tolist()]


def inversion_objective(targets: list[int], s: InversionSettings):
    loss = cross_entropy(targets)
    if s.r_feature:
        loss = loss + (s.r_feature * len(targets)) * bn_statistics(first_layer_multiplier=s.first_layer_multiplier)
    for weight, term in ((s.tv_l1, tv_l1), (s.tv_l2, tv_l2), (s.l2, lambda: l2_pixel(0.5))):
        if weight:
            loss = loss + weight * term()
    return loss


def make_deepinversion(model: nn.Module, classes: list[str], preprocessing: Preprocessing,
                       settings: InversionSettings, name: str = "", device="auto",
                       plan: BatchPlan | None = None) -> Prototypes:
    s = settings
    if s.r_feature and not batch_norms(model):
        raise ValueError(f"deepinversion matches batch-norm statistics, but {name or type(model).__name__} has no "
                         "BatchNorm2d layer (a vision transformer has none): use deepdream, or set r_feature: 0")
    size = resolve_size(s.size, preprocessing)
    jitter = s.jitter_at(size)
    targets = inversion_targets(s, len(classes))
    images, losses, render_settings = render_in_batches(
        targets, lambda batch: inversion_objective(batch, s), model, preprocessing, s, size=size,
        device=resolve_device(device), what="deepinversion", jitter=jitter, plan=plan)
    recorded = asdict(s) | {"size": size, "jitter": jitter,
                            "objective": inversion_objective([0], s).description.replace("ce([0])", "ce(target)")}
    return as_prototypes("deepinversion", name, classes, images, targets, losses, recorded, render_settings, plan)
