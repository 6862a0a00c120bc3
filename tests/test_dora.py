"""DORA: the distance, the settings reaching the render loop, the channel axis, and a planted outlier neuron."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL
from torch import nn

from peekflow.cli import main
from peekflow.data.folder import Preprocessing
from peekflow.neurons.dora import (DoraSettings, dora_table, ea_distance, lof_outliers, make_sams, run_dora,
                                   starting_images)
from peekflow.neurons.label_figures import plot_dora

PREP = Preprocessing(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])


def conv_net(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """conv (given weights) -> relu (the layer DORA reads) -> mean pool -> fc."""
    out, _, k, _ = weight.shape
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, out, k, padding=k // 2), relu=nn.ReLU(),
                                    pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(out, 2)))
    with torch.no_grad():
        net.conv.weight.copy_(weight)
        net.conv.bias.copy_(bias)
    return net.eval()


def test_ea_distance_is_sqrt_of_half_one_minus_cosine():
    r = np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 3.0, 0], [-1.0, 0, 0], [0, 0, 0], [1.0, 1.0, 0]])
    d = ea_distance(r)
    assert d[0, 1] == pytest.approx(0) and d[0, 2] == pytest.approx(np.sqrt(0.5)) and d[0, 3] == pytest.approx(1)
    assert d[4, 0] == pytest.approx(np.sqrt(0.5))  # a zero representation: cosine 0
    assert d[0, 5] == pytest.approx(np.sqrt((1 - 1 / np.sqrt(2)) / 2))
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)


def test_mds_map_keeps_distances_and_does_not_depend_on_eigenvector_signs(monkeypatch):
    """The map's distances equal the input's (points that are truly 2-D), and its axes do not flip with the sign
    eigh happens to give an eigenvector (seen between processes with other thread counts)."""
    from peekflow.neurons.dora import classical_mds

    points = np.random.default_rng(0).normal(size=(12, 2)) * [3.0, 1.0]
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    coords = classical_mds(distances)
    assert np.allclose(np.linalg.norm(coords[:, None] - coords[None], axis=-1), distances)
    eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda a: (lambda w, v: (w, -v))(*eigh(a)))
    assert np.allclose(classical_mds(distances), coords)
    monkeypatch.undo()
    for seed in range(10):  # rounding-sized changes of the input (another thread count) keep the picture
        noise = np.random.default_rng(seed).normal(scale=1e-12, size=distances.shape)
        assert np.allclose(classical_mds(distances + (noise + noise.T) * (1 - np.eye(12))), coords)


def test_lof_ranks_an_isolated_point_highest():
    points = np.r_[np.random.default_rng(0).normal(size=(20, 2)) * 0.1, [[3.0, 3.0]]]
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    scores, flags = lof_outliers(d, n_neighbors=5)
    assert scores.argmax() == 20 and flags[20] and flags.sum() <= 2


def test_lr_zero_leaves_the_sams_at_their_start():
    torch.manual_seed(0)
    net = conv_net(torch.randn(4, 3, 3, 3), torch.zeros(4))
    s = DoraSettings(steps=5, lr=0.0, size=16, jitter=2, seed=3)
    images = make_sams(net, "relu", [0, 1, 2, 3], PREP, s, 16, "cpu")
    assert np.array_equal(images, starting_images(4, s, 16))
    moved = make_sams(net, "relu", [0, 1, 2, 3], PREP, DoraSettings(steps=5, lr=0.05, size=16, seed=3), 16, "cpu")
    assert np.abs(moved - images).max() > 0.01  # the learning rate takes effect


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_the_channel_axis_is_optimised(param):
    """Channel c of a 1x1 conv with identity weights is colour c: neuron c's s-AMS must turn colour c up most."""
    net = conv_net(torch.eye(3).reshape(3, 3, 1, 1), torch.zeros(3))
    s = DoraSettings(steps=30, lr=0.1, size=8, param=param, seed=0)
    images = make_sams(net, "conv", [0, 1, 2], PREP, s, 8, "cpu")
    gain = images.mean((2, 3)) - starting_images(3, s, 8).mean((2, 3))  # [neuron, colour]
    assert list(gain.argmax(1)) == [0, 1, 2]


def planted_outlier_net(channels: int = 12, seed: int = 0) -> nn.Module:
    """All channels but the last share one random 3x3 filter (plus small noise); the last one's weights were replaced
    by an independent random filter; one extra channel is dead (weights 0, bias -1: always off after the ReLU)."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(3, 3, 3, generator=g)
    w = shared + 0.2 * torch.randn(channels, 3, 3, 3, generator=g)
    w[-1] = torch.randn(3, 3, 3, generator=g)
    w = torch.cat([w, torch.zeros(1, 3, 3, 3)])
    return conv_net(w, torch.cat([torch.zeros(channels), torch.tensor([-1.0])]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dora_ranks_the_replaced_channel_first(seed):
    net = planted_outlier_net(seed=seed)
    r = run_dora(net, "relu", PREP, DoraSettings(size=16, steps=40, lr=0.05, n_neighbors=5, seed=seed))
    table = dora_table(r)
    assert table["neuron"].iloc[0] == 11 and table["rank"].iloc[0] == 1 and table["outlier"].iloc[0]
    dead = table.set_index("neuron").loc[12]
    assert not dead["activated"] and np.isnan(dead["lof"]) and dead["rank"] == 0 and not dead["outlier"]
    assert table["neuron"].iloc[-1] == 12  # the neurons left out come last
    assert r.distances.shape == (12, 12)


def test_dora_is_deterministic_and_plots(tmp_path):
    net = planted_outlier_net()
    s = DoraSettings(size=16, steps=5, per_neuron=2, n_neighbors=4, seed=7, jitter=1, flip=True)
    a, b = run_dora(net, "relu", PREP, s), run_dora(net, "relu", PREP, s)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.scores, b.scores, equal_nan=True)
    assert a.images.shape == (26, 3, 16, 16) and a.representations.shape == (13, 13)
    plot_dora(tmp_path / "dora.png", a)
    assert (tmp_path / "dora.png").stat().st_size > 1000


def test_dora_rejects_a_bad_neuron_list():
    with pytest.raises(ValueError, match="not channels of layer 'relu'"):
        run_dora(planted_outlier_net(), "relu", PREP, DoraSettings(size=16, steps=1, neurons=[0, 99]))


def test_cli_writes_csv_and_figure(tiny_checkpoint, tmp_path):
    import json

    model = json.dumps(TINY_MODEL)
    out, fig = tmp_path / "n" / "dora.csv", tmp_path / "n" / "dora.png"
    args = ["dora", "--model", model, "--checkpoint", str(tiny_checkpoint), "--layer", "layer4", "--threads", "1",
            "--settings", json.dumps({"size": 16, "steps": 3, "n_neighbors": 3}), "--out", str(out), "--figure",
            str(fig)]
    assert main(args) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:5]) == ["neuron", "lof", "outlier", "rank", "activated"]
    assert sorted(table["neuron"]) == list(range(8)) and fig.exists()
    bad = args[:6] + ["nolayer"] + args[7:]
    assert main(bad) == 1


def test_a_neuron_off_at_its_start_is_restarted_from_brighter_noise():
    """Neuron 3 is ReLU(red - 1) in normalised units: off (no gradient) unless some pixel's red exceeds 0.75, which
    the first starting images (mid-grey +- 0.2) never reach; a restart from noise of twice the spread does, and it is
    then activated. The neurons activated at once keep their first s-AMS."""
    w = torch.zeros(4, 3, 1, 1)
    w[[0, 1, 2, 3], [0, 1, 2, 0]] = 1.0
    net = conv_net(w, torch.tensor([0.0, 0.0, 0.0, -1.0]))
    s = DoraSettings(size=16, steps=20, n_neighbors=2, seed=0)
    assert starting_images(4, s, 16)[:, 0].max() < 0.75
    never = run_dora(net, "relu", PREP, dataclasses.replace(s, restarts=0))
    again = run_dora(net, "relu", PREP, s)
    assert list(never.activated) == [True, True, True, False] and again.activated.all()
    assert np.array_equal(never.images[:3], again.images[:3]) and not np.array_equal(never.images[3], again.images[3])
    assert again.images[3, 0].max() > 0.75 and np.isfinite(again.scores).all()
    hopeless = conv_net(w, torch.tensor([0.0, 0.0, 0.0, -2.0]))  # needs red > 1: no start can help
    assert list(run_dora(hopeless, "relu", PREP, s).activated) == [True, True, True, False]


def test_jitter_defaults_scale_with_the_image_side():
    from peekflow.prototypes.caricature import CaricatureSettings
    from peekflow.prototypes.deepinversion import InversionSettings

    for cls in (DoraSettings, CaricatureSettings):
        assert [cls(layer="x").jitter_at(n) if cls is CaricatureSettings else cls().jitter_at(n)
                for n in (32, 64, 224)] == [1, 2, 7]
    assert [InversionSettings().jitter_at(n) for n in (64, 224, 256)] == [9, 30, 34]
    assert DoraSettings(jitter=0).jitter_at(224) == 0 and DoraSettings(jitter=3).jitter_at(224) == 3
