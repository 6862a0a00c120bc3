"""Layers by module path (`layer4`, `blocks.11`, `stages.3.blocks.2`), and a context manager that records their
outputs with forward hooks -- a transformer's token layers as maps of their patch tokens (tokens.py)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from peekflow.models.tokens import as_map, token_layout


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def get_layers(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    wrong = [n for n in names if n not in modules or not n]
    if wrong:
        raise ValueError(f"layer(s) {wrong} not in {type(model).__name__}; valid names: {layer_names(model)}")
    return {n: modules[n] for n in names}


@contextlib.contextmanager
def record_layers(model: nn.Module, names: list[str]):
    """`with record_layers(model, ["layer4"]) as acts: model(x); acts["layer4"]` -- hooks are always removed."""
    acts: dict[str, torch.Tensor] = {}
    handles = []
    layout = token_layout(model)
    if layout is not None:
        size = {}
        handles.append(model.register_forward_pre_hook(lambda _m, args: size.update(hw=tuple(args[0].shape[-2:]))))
    for name, module in get_layers(model, names).items():
        def hook(m, _inp, out, name=name):
            acts[name] = out if layout is None else as_map(out, m, layout, size["hw"])
        handles.append(module.register_forward_hook(hook))
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()


def layer_channels(model: nn.Module, layer: str, size: int, device="cpu") -> int:
    """Channels (or token width) of `layer`: its pooled width after one forward pass of a `size` px input of zeros."""
    with torch.no_grad(), record_layers(model, [layer]) as acts:
        model(torch.zeros(1, 3, size, size, device=device))
    return int(pool(acts[layer])[0].shape[1])


def pool(act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(spatial mean, spatial max) per channel: [B,C,H,W] -> [B,C]; tokens [B,T,C] -> over T; [B,C] unchanged. A map
    of patch tokens (tokens.py) gives its pooled token feature (class token or mean) in place of the mean."""
    if act.ndim == 4 and getattr(act, "token_pooled", None) is not None:
        return act.token_pooled, act.amax(dim=(2, 3))
    if act.ndim == 4:
        return act.mean(dim=(2, 3)), act.amax(dim=(2, 3))
    if act.ndim == 3:
        return act.mean(dim=1), act.amax(dim=1)
    if act.ndim == 2:
        return act, act
    raise ValueError(f"cannot pool a layer output of shape {tuple(act.shape)}")
