"""Relevance of one channel per image, read at earlier layers, with zennit's attribution rules (not hand-written).

`channel_relevance(model, images, layer, channels, at=[...])`: image b explains channel channels[b] of `layer`. The
backward pass starts at that channel's map with relevance = its positive activation (other channels 0) and runs
under a zennit composite, so the gradient that reaches an earlier layer's output *is* the relevance there (zennit's
rules return relevance in place of the gradient):

    epsilon_plus_flat   LRP (Montavon et al. 2019): epsilon rule on dense layers, z+ on convolutions, flat on the
                        first layer; batch norms merged into the convolution before them (canonizers, below)
    guided_backprop     Guided Backprop (Springenberg et al. 2015): ReLU passes positive gradients only
    gradient            the plain gradient (no rules): the baseline

Returns {layer: [B, C_l, H_l, W_l]} for each layer of `at` (a transformer's token layer as its patch-token map) and
the target layer's output. On a transformer only guided_backprop and gradient apply (check_method). The model's own modules are modified only inside the call (zennit's context).
`class_relevance` explains a class logit instead (Relevance Maximisation ranks images by a channel's relevance to
the predicted class, Achtibat et al. 2023).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from peekflow.models.layers import get_layers, record_layers
from peekflow.models.tokens import as_map, token_layout

METHODS = ("epsilon_plus_flat", "guided_backprop", "gradient")


def composite(method: str, model: nn.Module):
    """The zennit composite of `method` for `model` (None for the plain gradient)."""
    check_method(model, method)
    if method == "gradient":
        return None
    from zennit.composites import EpsilonPlusFlat, GuidedBackprop

    if method == "guided_backprop":
        return GuidedBackprop()
    return EpsilonPlusFlat(canonizers=[_canonizer(model)])


def check_method(model: nn.Module, method: str) -> None:
    """Fail where `method` cannot explain `model`: zennit has no LRP rules for attention and layer norm, and on a
    transformer EpsilonPlusFlat's relevance blows up (measured: 1e8 from a start of 7 on a small ViT)."""
    if method not in METHODS:
        raise ValueError(f"unknown relevance method {method!r}; valid: {list(METHODS)}")
    if method == "epsilon_plus_flat" and token_layout(model) is not None:
        raise ValueError(f"relevance epsilon_plus_flat (LRP): zennit has no rules for the attention and layer norms of "
                         f"{type(model).__name__}; use relevance: guided_backprop or gradient for a transformer")


def _canonizer(model: nn.Module):
    """Batch norms merged into the convolution before them, and each residual sum of a torchvision or peekflow ResNet
    block made a zennit `Sum` module, which splits relevance between the two branches in proportion to their
    contributions (without it both branches would get all of it). Other residual sums are not modules: across them
    relevance is not conserved (VITAL scales each map to [0, 1], so only the branches' relative share is affected)."""
    from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from peekflow.models.small import BasicBlock as SmallBlock

    if any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules()):
        return ResNetCanonizer()

    def small_block(_name, module):
        if not isinstance(module, SmallBlock):
            return None
        from zennit.layer import Sum

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            branch = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(self.canonizer_sum(torch.stack([identity, branch], dim=-1)))

        return {"forward": forward.__get__(module), "canonizer_sum": Sum()}

    return CompositeCanonizer([SequentialMergeBatchNorm(), AttributeCanonizer(small_block)])


@contextlib.contextmanager
def _rules(model: nn.Module, method: str):
    comp = composite(method, model)
    if comp is None:
        yield model
        return
    with comp.context(model) as modified:
        yield modified


def _relevance(model, x, layer, at, seed_fn, method):
    """Forward under `method`'s rules recording `at` and `layer`; backward from seed_fn(outputs) -> relevances.

    The gradient is taken at the layers' own outputs (a transformer's token tensors) and then read as maps like the
    recorded outputs: a token map is a copy off the path from the input to `layer`, which no gradient reaches."""
    names = sorted(set(at) | ({layer} if layer else set()))
    layout = token_layout(model)
    raw: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), _rules(model, method) as m, record_layers(m, names) as acts:
            modules = get_layers(m, list(at))
            handles = [module.register_forward_hook(lambda _m, _i, out, name=name: raw.__setitem__(name, out))
                       for name, module in modules.items()]
            try:
                x = x.detach().requires_grad_(True)
                logits = m(x)
            finally:
                for h in handles:
                    h.remove()
            start, seed = seed_fn(acts, logits)
            grads = torch.autograd.grad(start, [raw[name] for name in at], grad_outputs=seed, allow_unused=True)
            out = {}
            for name, g in zip(at, grads):
                g = torch.zeros_like(raw[name]) if g is None else g
                out[name] = (g if layout is None else as_map(g, modules[name], layout, tuple(x.shape[-2:]))).detach()
            target = acts[layer].detach() if layer else logits.detach()
    finally:
        model.train(was_training)
    return out, target


def channel_relevance(model: nn.Module, x: torch.Tensor, layer: str, channels, at: list[str],
                      method: str = "epsilon_plus_flat") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """x: normalised model input [B,3,H,W]; channels: [B] channel of `layer` that each image explains.
    Returns ({at layer: relevance}, `layer`'s output)."""
    channels = torch.as_tensor(channels, device=x.device).long().reshape(-1)
    if len(channels) != len(x):
        raise ValueError(f"channel_relevance: {len(channels)} channels for {len(x)} images")

    def seed(acts, _logits):
        a = acts[layer]
        if a.ndim != 4:
            raise ValueError(f"relevance needs a [B,C,H,W] map at {layer!r}, got {tuple(a.shape)}")
        if int(channels.max()) >= a.shape[1]:
            raise ValueError(f"channel {int(channels.max())} out of range: {layer!r} has {a.shape[1]} channels")
        mask = torch.zeros_like(a)
        mask[torch.arange(len(a)), channels] = 1.0
        return a, mask * a.detach().clamp_min(0)

    return _relevance(model, x, layer, at, seed, method)


def class_relevance(model: nn.Module, x: torch.Tensor, at: list[str], classes=None,
                    method: str = "epsilon_plus_flat") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Relevance of each image's class logit (`classes` [B], default the predicted class) at the layers `at`.
    Returns ({layer: relevance}, logits)."""

    def seed(_acts, logits):
        target = logits.argmax(1) if classes is None else torch.as_tensor(classes, device=logits.device).long()
        mask = torch.zeros_like(logits)
        mask[torch.arange(len(logits)), target] = 1.0
        return logits, mask * logits.detach().clamp_min(0)

    return _relevance(model, x, None, at, seed, method)


def unit_range(r: torch.Tensor, dims=(2, 3)) -> torch.Tensor:
    """Min-max scaling to [0, 1] over `dims` (a channel's map), as VITAL normalises relevance maps."""
    low = r.amin(dim=dims, keepdim=True)
    return (r - low) / ((r.amax(dim=dims, keepdim=True) - low) + 1e-6)
