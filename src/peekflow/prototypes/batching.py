"""What DeepDream and DeepInversion prototypes share: the image size, the targets' classes, per-image seeded
parameterisations, rendering the targets batch by batch, and the `Prototypes` they end in.

Seeding (the same settings give the same images on CPU):
- the starting image of prototype i comes from its own generator, seeded from (seed, i) and drawn on the CPU, so it
  depends neither on the batch it lands in nor on the device;
- the per-step transforms (jitter, flip) of batch j are drawn from render's generator seeded `seed + j`.
Hence a per-image loss without transforms (DeepDream's default) gives the same images for every `batch_size`
(up to floating-point differences of batched kernels); with transforms, or with a batch-level loss such as
DeepInversion's batch-norm statistics, the images depend on `batch_size` but never on anything else.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from peekflow.data.folder import Preprocessing
from peekflow.prototypes.store import Prototypes
from peekflow.shards import BatchPlan, joined
from peekflow.synthesis.objective import Objective
from peekflow.synthesis.param import PARAMS, Param, fourier, pixel
from peekflow.synthesis.render import render
from peekflow.synthesis.settings import RenderSettings, render_options
from peekflow.synthesis.transforms import flip as flip_t, jitter as jitter_t


def resolve_size(size: int | None, preprocessing: Preprocessing) -> int:
    """The input size to synthesise at: `size` if set, else the model's crop, else its resize."""
    chosen = size or preprocessing.crop or preprocessing.resize
    if not chosen:
        raise ValueError("settings.size is not set and the model's preprocessing has neither crop nor resize: "
                         "set size (the model's input size) in the settings")
    if int(chosen) < 2:
        raise ValueError(f"settings.size must be >= 2, got {chosen}")
    return int(chosen)


def resolve_classes(selection, num_classes: int) -> list[int]:
    """ "all" -> every output unit; a list of class indices -> itself (checked)."""
    if selection == "all":
        return list(range(num_classes))
    if isinstance(selection, (str, bytes)) or not isinstance(selection, Sequence) or not selection:
        raise ValueError(f"classes must be \"all\" or a non-empty list of class indices, got {selection!r}")
    bad = [c for c in selection if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} are not class indices of a model with {num_classes} classes")
    return list(selection)


def repeat_each(targets: Sequence[int], times: int) -> list[int]:
    """Target-major: `times` renders of the first target, then of the next, ... (M prototypes per class, s-AMS per
    neuron)."""
    return [t for t in targets for _ in range(times)]


def image_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of prototype `index`'s starting image."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2 ** 63))


def per_image_param(kind: str, indices: Sequence[int], size: int, seed: int, init_std: float, device) -> Param:
    """One Param for the prototypes `indices`, each started from its own generator (see the module doc).

    pixel:   values in [0,1] clamped after each step (as PEEK and DeepInversion clip), from 0.5 + init_std * noise
    fourier: Lucid's decorrelated Fourier parameterisation with sigmoid, spectrum noise init_std
    """
    if kind not in PARAMS:
        raise ValueError(f"unknown param {kind!r}; valid: {list(PARAMS)}")
    if init_std < 0:
        raise ValueError(f"init_std must be >= 0, got {init_std}")
    device = torch.device(device)
    if kind == "pixel":
        noise = torch.stack([torch.randn((3, size, size), generator=image_generator(seed, i)) for i in indices])
        return pixel(len(indices), size, init=(0.5 + init_std * noise).clamp(0, 1), squash="clamp", device=device)
    # each spectrum drawn on the CPU from its own generator, then one batched leaf: one FFT per step for the batch
    seeded = torch.cat([fourier(1, size, std=init_std, generator=image_generator(seed, i)).params[0].detach()
                        for i in indices])
    param = fourier(len(indices), size, std=0.0, device=device)
    param.params[0].data = seeded.to(device)  # the leaf its image_fn reads takes the seeded values
    param.description = f"fourier({len(indices)}, {(size, size)}, per-image seeded)"
    return param


def transforms_of(jitter: int, flip: bool) -> list:
    out = []
    if jitter:
        out.append(jitter_t(jitter))
    if flip:
        out.append(flip_t(0.5))
    return out


def render_in_batches(targets: Sequence[int], objective_for: Callable[[list[int]], Objective], model: nn.Module,
                      preprocessing: Preprocessing, s: RenderSettings, *, size: int, device, what: str,
                      jitter: int | None = None, plan: BatchPlan | None = None):
    """Render prototypes for `targets` in batches of `s.batch_size` with the render settings `s` (`jitter`, when
    given, replaces s.jitter_at(size)): objective_for(batch targets) is the loss of one batch. Returns (images
    [N,3,H,W] float32 in [0,1], final per-image losses [N], render settings of the first batch). With a `plan`
    (peekflow.shards), only its shard's batches, finished ones read back from its partial folder."""
    transforms = transforms_of(s.jitter_at(size) if jitter is None else jitter, s.flip)
    targets = [int(t) for t in targets]
    if not targets:
        raise ValueError(f"{what}: no prototypes to make (empty target list)")
    model = model.to(device)

    def make(j: int, idx: range) -> tuple[dict, dict]:  # batch j's number in a one-job run is its seed
        result = render(objective_for([targets[i] for i in idx]), model,
                        per_image_param(s.param, idx, size, s.seed, s.init_std, device),
                        normalisation=(preprocessing.mean, preprocessing.std), transforms=transforms or None,
                        seed=s.seed + j, device=device, **render_options(s))
        return ({"images": result.images.float().cpu().clamp(0, 1).numpy(),
                 "losses": result.losses.float().cpu().numpy()}, result.settings)

    done = (plan or BatchPlan()).batches(
        len(targets), s.batch_size, what, make,
        describe=lambda a: f" ({len(a['losses'])} prototypes, mean final loss {float(a['losses'].mean()):.4g})")
    arrays = joined(done)
    return arrays["images"].astype(np.float32), arrays["losses"].astype(np.float32), done[0][1]


def as_prototypes(method: str, name: str, classes: list[str], images, targets, losses, settings: dict,
                  render_settings: dict, plan: BatchPlan | None = None) -> Prototypes:
    """The prototypes of a run of all `targets` -- or, with a shard `plan`, of its shard's targets, recording which."""
    recorded = dict(settings)
    recorded["render"] = {k: render_settings.get(k) for k in ("device", "precision", "param", "transforms",
                                                               "normalisation")}
    if plan is not None and plan.shard[1] > 1:
        recorded.update(plan.attrs(len(targets), settings["batch_size"]))
        start, stop = recorded["shard"]["rows"]
        targets = targets[start:stop]
    return Prototypes(images=images, targets=np.asarray(targets, dtype=np.int64), losses=losses, method=method,
                      model=name, classes=list(classes), settings=recorded)
