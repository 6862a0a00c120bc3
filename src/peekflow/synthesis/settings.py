"""`RenderSettings`: the render engine's settings, shared by every image-optimisation method (DeepDream and
DeepInversion prototypes, caricatures, DORA's s-AMS). A method's settings class extends it with its own keys and may
give a key another default (`redefault`); `render_options` hands every optimisation key to `render()`, and
prototypes.batching.render_in_batches reads the rest (size, param, init_std, jitter, flip, batch_size, seed)."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from types import MappingProxyType

from peekflow.settings import Settings, setting
from peekflow.synthesis.param import PARAMS
from peekflow.synthesis.render import OPTIMIZERS, SCHEDULES, render


@dataclass
class RenderSettings(Settings):
    size: int | None = setting(None, "image side in pixels (null: the model's crop, else its resize)", minimum=2)
    steps: int = setting(200, "optimiser steps", minimum=0)
    lr: float = setting(0.05, "learning rate (per step; pixel param: [0,1] pixel units)", minimum=0)
    optimizer: str = setting("adam", "optimiser", choices=OPTIMIZERS)
    betas: list[float] = setting([0.9, 0.999], "Adam's (beta1, beta2)")
    weight_decay: float = setting(0.0, "weight decay of the optimiser (AdamW: decoupled)", minimum=0)
    schedule: str = setting("constant", "learning rate after the warm-up: constant, or cosine decay to 0 at `steps`",
                            choices=SCHEDULES)
    warmup: int = setting(0, "steps of linear learning-rate warm-up", minimum=0)
    grad_clip: float | None = setting(None, "clip the gradient norm to this (null: no clipping)", exclusive_minimum=0)
    param: str = setting("pixel", "parameterisation: pixel (clamped to [0,1]) or fourier (decorrelated, sigmoid)",
                         choices=PARAMS)
    init_std: float = setting(0.01, "noise of the starting image (pixel: std around mid-grey; fourier: spectrum std)",
                              minimum=0)
    jitter: int = setting(0, "random shift per step, pixels (0: off)", minimum=0)
    flip: bool = setting(False, "random horizontal flip per step")
    batch_size: int = setting(64, "images rendered together", minimum=1)
    seed: int = setting(0, "seed of the starting images and the per-step transforms")
    amp: bool = setting(False, "mixed precision, CUDA only (bf16 where supported, else fp16); fp32 on the CPU")
    fold_bn: bool = setting(True, "fold each batch norm into the convolution before it (same function, faster; "
                                  "skipped for batch-norm statistics objectives)")
    channels_last: bool = setting(True, "NHWC input layout (faster convolutions); false for a model whose forward "
                                        "needs contiguous activations")

    def jitter_at(self, size: int) -> int:
        """The per-step shift, pixels, at image side `size`: the setting, or for null (`scaled_jitter`) the class's
        reference shift scaled to `size`."""
        if self.jitter is not None:
            return int(self.jitter)
        pixels, side = next(f for f in dataclasses.fields(self) if f.name == "jitter").metadata["scaled_from"]
        return round(pixels * size / side)


def scaled_jitter(pixels: int, side: int) -> dataclasses.Field:
    """A `jitter` setting whose null default is `pixels` at image side `side`, scaled to the side rendered: a shift
    only means something relative to the image (2 px at 64 px is 7 px at 224 px)."""
    f = setting(None, f"random shift per step, pixels (0: off; null: {pixels} px at {side} px, scaled with the "
                      f"image side: round({pixels} * size / {side}))", minimum=0)
    f.metadata = MappingProxyType({**f.metadata, "scaled_from": (pixels, side)})
    return f


RENDER_OPTIONS = [p.name for p in inspect.signature(render).parameters.values() if p.kind == p.KEYWORD_ONLY
                  and p.name in {f.name for f in dataclasses.fields(RenderSettings)} and p.name != "seed"]


def render_options(s: RenderSettings) -> dict:
    """render()'s keyword arguments from `s` (the seed is render_in_batches': one per batch)."""
    return {name: getattr(s, name) for name in RENDER_OPTIONS}
