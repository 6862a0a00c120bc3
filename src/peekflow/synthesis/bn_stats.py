"""DeepInversion's feature-statistics prior: make the images' batch statistics at every BatchNorm2d match the
running statistics the network stored during training.

    R_feature = sum_l w_l * ( ||mu_l(x) - running_mean_l||_2 + ||sigma^2_l(x) - running_var_l||_2 )

mu_l, sigma^2_l: mean and biased variance (unbiased=False) of BN layer l's input over the batch and positions
(N,H,W), per channel; w_0 = first_layer_multiplier (the first BN the input passes through; 10 in DeepInversion's
released code, 1 in its paper and in PEEK's copy), w_l = 1 otherwise. Norms, not squared norms, as in the code.
R_feature is one number for the whole batch; the objective gives each of the B images R_feature / B, so the sum over
images is the batch loss.

Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020.

Use (what the render loop does for an objective whose `needs` holds "bn_stats"):

    with record_bn_statistics(net) as stats:
        for step in ...:
            stats.clear()                      # the hooks append: clear before every forward pass
            logits = net(normalise(images))
            acts.extras["bn_stats"] = {"model": stats}
            loss = objective(acts)

The network must be in eval mode: in train mode BN normalises with the batch's own statistics and moves its
running ones.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from peekflow.synthesis.objective import DEFAULT_MODEL, Activations, Objective, objective

BNStats = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # batch mean, batch var, running mean, var


def batch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm2d layers that keep running statistics, in module order."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]


@contextlib.contextmanager
def record_bn_statistics(model: nn.Module):
    """Yield a list that each forward pass appends one (mean, var, running_mean, running_var) to per BN layer, in the
    order the layers run (module order for a network that calls its layers in the order it defines them); clear it
    before each pass. Statistics of fp16/bf16 inputs are taken in float32. A BN layer in train mode raises
    RuntimeError. Hooks are removed on exit."""
    stats: list[BNStats] = []
    names = {m: name for name, m in model.named_modules()}

    def hook(module: nn.BatchNorm2d, inputs, _output):
        if module.training:
            raise RuntimeError(f"BatchNorm layer {names[module]!r} is in train mode, which normalises with the batch's "
                               f"own statistics and overwrites the running ones: call model.eval() first")
        x = inputs[0]
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        stats.append((x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False),
                      module.running_mean, module.running_var))

    handles = [m.register_forward_hook(hook) for m in batch_norms(model)]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


def r_feature(stats: list[BNStats], first_layer_multiplier: float = 10.0) -> torch.Tensor:
    """The batch's R_feature (a scalar) from `record_bn_statistics`' list."""
    total = 0.0
    for i, (mean, var, running_mean, running_var) in enumerate(stats):
        term = torch.linalg.vector_norm(mean - running_mean.to(mean)) + torch.linalg.vector_norm(
            var - running_var.to(var))
        total = total + (first_layer_multiplier if i == 0 else 1.0) * term
    return total


def bn_statistics(model: str = DEFAULT_MODEL, first_layer_multiplier: float = 10.0) -> Objective:
    at = "" if model == DEFAULT_MODEL else f"@{model}"

    @objective(f"bn_stats{at}", needs={"bn_stats"})
    def fn(acts: Activations):
        recorded = acts.extras.get("bn_stats", {})
        if model not in recorded:
            raise KeyError(f"no batch-norm statistics for model {model!r} in acts.extras['bn_stats'] "
                           f"(have {sorted(recorded)}); the render loop records them for objectives needing 'bn_stats'")
        if not recorded[model]:
            raise ValueError(f"model {model!r} ran no BatchNorm2d layer with running statistics: DeepInversion's "
                             f"feature loss needs them")
        batch = acts.images.shape[0]
        return (r_feature(recorded[model], first_layer_multiplier) / batch).expand(batch)

    return fn
