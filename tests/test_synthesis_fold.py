"""Batch norm folded into convolutions for rendering (peekflow.synthesis.fold): the same function, the same recorded
blocks and input gradients, the original untouched; what must not fold does not."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from peekflow.models.layers import record_layers
from peekflow.models.registry import build_model
from peekflow.synthesis.fold import conv_bn_pairs, fold_batchnorm
from peekflow.synthesis.objective import objective
from peekflow.synthesis.param import fourier
from peekflow.synthesis.render import render
from peekflow.synthesis.transforms import flip, jitter


def trained_like(arch: str, num_classes: int = 5, **kwargs) -> nn.Module:
    """A model whose batch norms hold non-trivial running statistics and affine parameters (not the identity)."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes, **kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, 32, 32) * 2)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("arch, kwargs, pairs", [("small_resnet", {"widths": [4, 8, 8, 8]}, 12),
                                                 ("small_vgg", {"widths": [4, 4, 8, 8]}, 8),
                                                 ("resnet18", {}, 20)])
def test_folded_model_computes_the_same_outputs_blocks_and_input_gradients(arch, kwargs, pairs):
    model = trained_like(arch, **kwargs).double()  # float64: folding's own rounding far below the tolerance
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = ["layer3", "layer4"] if "resnet" in arch else ["block3"]
    folded, n = fold_batchnorm(model, keep=set(blocks))
    assert n == pairs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    outs = []
    for m in (model, folded):
        with record_layers(m, blocks) as acts:
            y = m(x)
            (grad,) = torch.autograd.grad((y * torch.arange(y.shape[1])).sum(), x)
            outs.append((y, {k: v.detach().clone() for k, v in acts.items()}, grad))
    (y0, acts0, g0), (y1, acts1, g1) = outs
    torch.testing.assert_close(y1, y0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g1, g0, rtol=1e-10, atol=1e-10)
    for name in blocks:
        torch.testing.assert_close(acts1[name], acts0[name], rtol=1e-10, atol=1e-10)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original keeps its weights and modules
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) >= pairs


def test_a_recorded_conv_keeps_its_own_output():
    model = trained_like("small_resnet", widths=[4, 8, 8, 8])
    pairs = dict(conv_bn_pairs(model, keep={"layer2.0.conv1"}))
    assert "layer2.0.conv1" not in pairs and pairs["layer2.0.conv2"] == "layer2.0.bn2"
    folded, _ = fold_batchnorm(model, keep={"layer2.0.conv1"})
    x = torch.rand(2, 3, 32, 32)
    names = ["layer2.0.conv1", "layer2.0.conv2"]
    with record_layers(model, names) as a, record_layers(folded, names) as b:
        model(x), folded(x)
        torch.testing.assert_close(b["layer2.0.conv1"], a["layer2.0.conv1"], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(b["layer2.0.conv2"], a["layer2.0.conv2"], atol=1e-2)  # folded: batch norm's output


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        x = self.bn(self.conv(x))
        if x.mean() > 0:
            x = -x
        return self.fc(x.mean((2, 3)))


class Shared(nn.Module):
    """One conv + batch norm applied twice, and a batch norm without running statistics."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = self.bn(self.conv(self.bn(self.conv(x))))
        return self.fc(self.bn2(self.conv2(x)).mean((2, 3)))


class Recording(nn.Module):
    """A forward with a side effect: it keeps what it saw."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_tracing_leaves_the_model_alone():
    model = Recording().eval()
    folded, n = fold_batchnorm(model)
    assert n == 1 and model.seen == [] and folded.seen == []
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(folded(x), model(x))


@pytest.mark.parametrize("make", [Branchy, Shared])
def test_what_cannot_fold_is_left_as_it_is(make):
    model = make().eval()
    folded, n = fold_batchnorm(model)
    assert n == 0 and folded is model


def test_a_training_model_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_model("small_resnet", 3, widths=[4, 4, 4, 4]))


def test_render_with_and_without_folding_gives_the_same_images():
    model = trained_like("small_resnet", widths=[4, 8, 8, 8])

    @objective("-logit(1)")
    def logit(acts):
        return -acts.logits_of()[:, 1]

    common = dict(steps=5, lr=0.05, normalisation=((0.5,) * 3, (0.25,) * 3), transforms=[jitter(2), flip()], seed=1)
    folded = render(logit, model, partial(fourier, 3, 32), fold_bn=True, **common)
    plain = render(logit, model, partial(fourier, 3, 32), fold_bn=False, **common)
    assert folded.settings["fold_bn"] and not plain.settings["fold_bn"]
    torch.testing.assert_close(folded.images, plain.images, rtol=0, atol=1e-4)
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
