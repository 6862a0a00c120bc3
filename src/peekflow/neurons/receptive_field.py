"""Receptive field and stride of a layer, measured empirically by the gradient of one output unit w.r.t. the input.

Works for any graph (residual branches, concatenations) without parsing modules. On a copy of the model every
convolution (and linear layer) becomes an averaging filter, batch, layer and group norm the identity, max pooling
average pooling, global pooling inside the network (squeeze-excitation) a constant, and the input is all ones: every
activation is then positive, so no ReLU or max blocks a gradient path, and the input pixels with non-zero gradient are
exactly the unit's theoretical receptive field. The probe input grows until the receptive field of a
central unit lies inside it, so fields larger than the model's input size are measured whole.

Unit (i, j) of the layer sees input rows [offset_y + i*stride_y, offset_y + i*stride_y + size_y) (and likewise for
columns); the offset is negative where the first layers pad.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from peekflow.models.layers import get_layers, record_layers


@dataclass(frozen=True)
class ReceptiveField:
    size: tuple[int, int]  # (rows, columns) of input pixels one unit sees
    stride: tuple[int, int]  # input pixels between neighbouring units
    offset: tuple[int, int]  # input (row, column) of unit (0, 0)'s top-left corner
    token: bool = False  # a transformer's token map (models/tokens.py): a unit is credited with its grid cell only

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Unclipped (top, left, bottom, right) of unit (i, j), bottom/right exclusive."""
        top, left = self.offset[0] + i * self.stride[0], self.offset[1] + j * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]


class _Stop(Exception):
    pass


def forward_to(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of `layer` for input x (as record_layers gives it), without running the rest of the model."""
    module = get_layers(model, [layer])[layer]

    def stop(*_):
        raise _Stop

    with record_layers(model, [layer]) as acts:
        handle = module.register_forward_hook(stop)  # after record_layers' hook: it runs second
        try:
            model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
    if layer not in acts:
        raise ValueError(f"layer {layer!r} did not run in the model's forward pass")
    return acts[layer]


def _positive_copy(model: nn.Module) -> nn.Module:
    probe = copy.deepcopy(model).double().eval()
    for name, m in list(probe.named_modules()):
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.fill_(1.0 / fan_in)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()  # weight 1, bias 0, mean 0, var 1: the identity (up to eps)
        elif isinstance(m, nn.MaxPool2d) and m.dilation in (1, (1, 1)):
            # a max passes the gradient to one input only; an average over the same window to all of them
            _replace(probe, name, nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode))
        elif isinstance(m, nn.AdaptiveMaxPool2d | nn.AdaptiveAvgPool2d):
            # a global pool inside the network (squeeze-excitation gates) would make every unit see the whole input
            _replace(probe, name, _Detached(nn.AdaptiveAvgPool2d(m.output_size)))
        elif isinstance(m, nn.LayerNorm | nn.GroupNorm):
            # normalising the probe's constant input would zero it (and its gradient); spatial support is unchanged
            _replace(probe, name, nn.Identity())
    return probe


class _Detached(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).detach()


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _support(probe, layer, size: int, unit_at) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    x = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    y = forward_to(probe, layer, x)
    if y.ndim != 4:
        raise ValueError(f"layer {layer!r} has output shape {tuple(y.shape)}; patches need a spatial map [B,C,H,W]")
    i, j = unit_at(y.shape[2]), unit_at(y.shape[3])
    (grad,) = torch.autograd.grad(y[0, :, i, j].sum(), x)
    mask = grad[0].abs().sum(0).numpy() > 0
    return mask, (i, j), (y.shape[2], y.shape[3])


def _extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def receptive_field(model: nn.Module, layer: str, input_size: int, max_size: int = 4096) -> ReceptiveField:
    """Receptive field of `layer`'s units, probed with square inputs from `input_size` up to `max_size` pixels.

    Two neighbouring central units give size, stride and offset; the input doubles until both fields lie inside it.
    A transformer's map (models/tokens.py) is credited with its grid cells: size = stride = input side / grid side."""
    with torch.no_grad():
        y = forward_to(model.eval(), layer, torch.zeros(1, 3, input_size, input_size))
    cell = getattr(y, "grid_cell", None)
    if cell:
        return ReceptiveField(size=(cell, cell), stride=(cell, cell), offset=(0, 0), token=True)
    probe = _positive_copy(model)
    size = max(int(input_size), 8)
    while True:
        boxes = []
        for back in (0, 1):
            mask, unit, out_hw = _support(probe, layer, size, lambda n, back=back: n // 2 - back)
            if not mask.any():
                raise ValueError(f"layer {layer!r}: no input pixel reaches its unit {unit} (is it a spatial layer?)")
            boxes.append((unit, _extent(mask)))
        inside = min(out_hw) >= 2 and all(t > 0 and l > 0 and b < size and r < size for _, (t, l, b, r) in boxes)
        if inside:
            break
        if size * 2 > max_size:
            raise ValueError(f"layer {layer!r}: receptive field not contained in a {size}px input (max_size)")
        size *= 2
    ((i, j), (top, left, bottom, right)), (_, (top2, left2, _, _)) = boxes
    stride = (top - top2, left - left2)
    return ReceptiveField(size=(bottom - top, right - left), stride=stride,
                          offset=(top - i * stride[0], left - j * stride[1]))
