"""Shared helpers of the synthesis tests: a tiny network and the one "the loss falls" check every objective uses."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from peekflow.synthesis.param import pixel
from peekflow.synthesis.render import render

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class TinyNet(nn.Module):
    """conv -> bn -> relu -> pool -> fc, with a batch-norm layer and named layers for layer objectives."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        return self.fc(self.relu(self.bn(self.conv(x))).mean((2, 3)))


class InputRecorder(nn.Module):
    """Logits = per-channel mean of the input; keeps the last input it saw."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return x.mean((2, 3)) * self.w


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyNet()


def assert_loss_falls(obj, models=None, param=None, steps: int = 8, lr: float = 0.05, size: int = 16, **kwargs):
    """Render a few steps from a small random image with the real render loop; the final loss must be below the
    first step's."""
    param = param or partial(pixel, 2, size)
    result = render(obj, models if models is not None else tiny_net(), param, steps=steps, lr=lr,
                    normalisation=kwargs.pop("normalisation", NORM), **kwargs)
    assert torch.isfinite(result.losses).all(), obj.description
    assert result.losses.mean().item() < result.history[0], (obj.description, result.history)
    return result
