"""The render loop: optimise a parameterisation so that an objective's per-image loss falls.

Each step: images = param() in [0,1] -> transforms(images, generator) -> per model x = (images - mean) / std (the
model's input normalisation, always) -> forward with the objective's layers recorded (and batch-norm statistics when
the objective needs "bn_stats") -> loss = objective(acts).sum() -> backward -> optional clip_grad_norm_ on the param
tensors -> optimiser step -> scheduler step -> param.project().

- optimiser  "adam" | "adamw" with lr, betas, weight_decay passed through; schedule "constant" | "cosine": linear
             warm-up over `warmup` steps (lr * (s+1)/warmup), then constant or cosine decay towards 0 at `steps`
- models     one nn.Module (named DEFAULT_MODEL) or {name: module}; for the call they are in eval mode with
             requires_grad False, both restored afterwards; they are not moved (pass them on `device`)
- seeding    one torch.Generator on `device` seeded with `seed` builds the param (when given as a factory) and then
             drives the transforms: the same seed gives the same images on CPU
- channels_last  the models see their inputs in NHWC layout (activations follow): oneDNN's and cuDNN's faster
             convolutions, ~20% off a small ResNet's forward + backward on the CPU. False: NCHW, for a model whose
             forward needs contiguous activations (e.g. `.view` on them)
- fold_bn    each batch norm folded into the convolution before it, in a copy of the model (fold.py; not for
             objectives that read batch-norm statistics): the same function, without the batch-norm passes
- amp        CUDA only: bf16 autocast where the GPU supports it (no loss scaling needed), else fp16 with GradScaler;
             only the model forwards run under autocast, the param, image, transforms and objective stay fp32. On
             CPU amp=True logs a line and runs fp32.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from peekflow.device import resolve_device
from peekflow.models.layers import record_layers
from peekflow.models.tokens import float_act
from peekflow.synthesis.fold import fold_batchnorm
from peekflow.synthesis.objective import DEFAULT_MODEL, Activations, Objective
from peekflow.synthesis.param import Param, as_param
from peekflow.synthesis.transforms import as_transform

log = logging.getLogger("peekflow")

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("constant", "cosine")


@dataclass
class RenderResult:
    images: torch.Tensor  # [B,3,H,W] in [0,1], final, untransformed, detached
    losses: torch.Tensor  # [B] objective on the final untransformed images
    history: list[float]  # mean loss per step (on that step's transformed images)
    objective: str
    settings: dict = field(default_factory=dict)


def make_optimizer(name: str, params, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0):
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {sorted(OPTIMIZERS)}")
    params = list(params)
    # the fused kernel: one pass over the parameters per step (the for-each one makes ~10, a tenth of a render step)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in params)
    return OPTIMIZERS[name](params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused)


def lr_factor(step: int, steps: int, schedule: str = "constant", warmup: int = 0) -> float:
    """Multiplier of lr at optimiser step `step` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {list(SCHEDULES)}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    done = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))


def _normalisations(normalisation, names, device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Model name -> (mean, std), each [C, 1, 1]."""
    def as_pair(pair, name):
        mean, std = (torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1, 1, 1) for v in pair)
        if (std <= 0).any():
            raise ValueError(f"normalisation std of model {name!r} must be positive, got {std.flatten().tolist()}")
        return mean, std

    if isinstance(normalisation, dict):
        missing = [n for n in names if n not in normalisation]
        if missing:
            raise ValueError(f"no normalisation (mean, std) for model(s) {missing}; given for {sorted(normalisation)}")
        return {n: as_pair(normalisation[n], n) for n in names}
    if normalisation is None or len(normalisation) != 2:
        raise ValueError("normalisation must be (mean, std) or {model name: (mean, std)}; use ((0,)*3, (1,)*3) "
                         "for a model that takes raw [0,1] input")
    return {n: as_pair(normalisation, n) for n in names}


@contextlib.contextmanager
def _frozen(models: dict[str, nn.Module]):
    """Eval mode and requires_grad False for the call; every module's mode and every parameter's flag restored."""
    modes = {m: m.training for model in models.values() for m in model.modules()}
    flags = {p: p.requires_grad for model in models.values() for p in model.parameters()}
    try:
        for model in models.values():
            model.eval().requires_grad_(False)
        yield
    finally:
        for m, training in modes.items():
            m.training = training
        for p, flag in flags.items():
            p.requires_grad_(flag)


def _amp_dtype(amp: bool, device: torch.device):
    if not amp:
        return None
    if device.type != "cuda":
        log.info("render: amp requested on %s; mixed precision is CUDA-only here, running fp32", device)
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def render(objective: Objective, models, param, *, steps: int, lr: float, normalisation, optimizer: str = "adam",
           betas=(0.9, 0.999), weight_decay: float = 0.0, schedule: str = "constant", warmup: int = 0,
           grad_clip: float | None = None, transforms=None, seed: int = 0, device="cpu", amp: bool = False,
           channels_last: bool = True, fold_bn: bool = True, log_every: int | None = None) -> RenderResult:
    models = {DEFAULT_MODEL: models} if isinstance(models, nn.Module) else dict(models)
    unknown = sorted({m for m, _ in objective.layers} - set(models))
    if unknown:
        raise ValueError(f"objective {objective.description!r} reads model(s) {unknown}; models: {sorted(models)}")
    if steps < 0 or lr < 0 or warmup < 0 or (grad_clip is not None and grad_clip <= 0):
        raise ValueError(f"need steps >= 0, lr >= 0, warmup >= 0, grad_clip > 0 or None; got steps={steps}, "
                         f"lr={lr}, warmup={warmup}, grad_clip={grad_clip}")
    lr_factor(0, steps, schedule, warmup)  # validates the schedule name before any work
    device = resolve_device(str(device))
    for name, model in models.items():
        p = next(model.parameters(), None)
        if p is not None and (p.device.type != device.type or device.index not in (None, p.device.index)):
            raise ValueError(f"model {name!r} is on {p.device} but render runs on {device}; move it first")
    norms = _normalisations(normalisation, list(models), device)
    affine = {n: (-mean / std, 1 / std) for n, (mean, std) in norms.items()}  # one op per step instead of two
    layers = {name: sorted(layer for m, layer in objective.layers if m == name) for name in models}
    amp_dtype = _amp_dtype(amp, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    param: Param = as_param(param, generator, device)
    transform = as_transform(transforms)
    opt = make_optimizer(optimizer, param.params, lr, betas, weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, schedule, warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    log_every = log_every or max(1, steps // 10)

    with _frozen(models), contextlib.ExitStack() as stack:
        if fold_bn and "bn_stats" not in objective.needs:  # DeepInversion's loss reads the batch norms themselves
            models = {n: fold_batchnorm(m, keep=set(layers[n]))[0] for n, m in models.items()}
        recorded = {n: stack.enter_context(record_layers(m, layers[n])) for n, m in models.items()}
        bn_stats = {}
        if "bn_stats" in objective.needs:
            from peekflow.synthesis.bn_stats import record_bn_statistics  # written beside this module
            bn_stats = {n: stack.enter_context(record_bn_statistics(m)) for n, m in models.items()}

        def loss_of(images: torch.Tensor) -> torch.Tensor:
            logits, acts = {}, {}
            for name, model in models.items():
                recorded[name].clear()
                if name in bn_stats:
                    bn_stats[name].clear()
                shift, inv_std = affine[name]
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                    x = torch.addcmul(shift, images, inv_std)  # (images - mean) / std
                    logits[name] = model(x.contiguous(memory_format=memory_format)).float()
                acts.update({(name, layer): float_act(out) if torch.is_tensor(out) else out
                             for layer, out in recorded[name].items()})
            extras = {"bn_stats": bn_stats} if bn_stats else {}
            return objective(Activations(images=images, logits=logits, layers=acts, extras=extras))

        history = []
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            per_image = loss_of(transform(param.image_fn(), generator))
            scaler.scale(per_image.sum()).backward()
            if grad_clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(param.params, grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            param.project()
            history.append(per_image.detach().mean())
            if (step + 1) % log_every == 0 or step + 1 == steps:
                log.info("render %s: step %d/%d loss %.4g lr %.3g", objective.description, step + 1, steps,
                         history[-1].item(), opt.param_groups[0]["lr"])

        with torch.no_grad():
            images = param.image_fn().detach()
            losses = loss_of(images).detach()
    history = torch.stack(history).tolist() if history else []
    if not all(math.isfinite(h) for h in history):
        log.warning("render %s: the loss became non-finite", objective.description)
    settings = {"steps": steps, "lr": lr, "optimizer": optimizer, "betas": tuple(betas), "weight_decay": weight_decay,
                "schedule": schedule, "warmup": warmup, "grad_clip": grad_clip, "seed": seed, "device": str(device),
                "amp": amp, "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype],
                "channels_last": channels_last, "fold_bn": fold_bn,
                "param": param.description, "transforms": repr(transform),
                "normalisation": {n: (m.flatten().tolist(), s.flatten().tolist()) for n, (m, s) in norms.items()}}
    return RenderResult(images, losses, history, objective.description, settings)
