"""RenderSettings: one set of render keys for every image-optimisation method, each of which reaches render()."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import pytest
import torch
from conftest import write_folder
from torch import nn

from peekflow.data.folder import Preprocessing
from peekflow.neurons.dora import DoraSettings, make_sams
from peekflow.prototypes import batching
from peekflow.prototypes.caricature import CaricatureSettings, make_caricatures
from peekflow.prototypes.deepdream import DreamSettings, make_deepdream
from peekflow.prototypes.deepinversion import InversionSettings, make_deepinversion
from peekflow.settings import describe
from peekflow.synthesis.render import RenderResult
from peekflow.synthesis.settings import RENDER_OPTIONS, RenderSettings

PREP = Preprocessing(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
CLASSES = ["a", "b", "c"]
OPTIONS = {"steps": 7, "lr": 0.01, "optimizer": "adamw", "betas": [0.8, 0.95], "weight_decay": 0.1,
           "schedule": "cosine", "warmup": 3, "grad_clip": 1.0, "amp": True, "channels_last": False, "fold_bn": False}


def net():
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 3, 1), bn=nn.BatchNorm2d(3), relu=nn.ReLU(),
                                     pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten()))


def test_every_render_key_is_used_by_render_or_by_the_batching():
    batching_keys = {"size", "param", "init_std", "jitter", "flip", "batch_size", "seed"}
    assert {f.name for f in dataclasses.fields(RenderSettings)} == set(RENDER_OPTIONS) | batching_keys
    assert set(OPTIONS) == set(RENDER_OPTIONS)


@pytest.mark.parametrize("method", ["deepdream", "deepinversion", "caricature", "dora"])
def test_every_render_option_reaches_render(method, monkeypatch, tmp_path):
    seen = []

    def fake_render(objective, model, param, **kwargs):
        seen.append(kwargs)
        images = param.image_fn().detach()
        return RenderResult(images, torch.zeros(len(images)), [], objective.description, {})

    monkeypatch.setattr(batching, "render", fake_render)
    common = dict(OPTIONS, size=8)
    if method == "deepdream":
        make_deepdream(net(), CLASSES, PREP, DreamSettings(**common, per_class=1), device="cpu")
    elif method == "deepinversion":
        make_deepinversion(net(), CLASSES, PREP, InversionSettings(**common, per_class=1), device="cpu")
    elif method == "caricature":
        root = write_folder(tmp_path / "refs", CLASSES, per_class=1, size=8)
        make_caricatures(net(), CLASSES, PREP, CaricatureSettings(**common, layer="conv"), root, device="cpu")
    else:
        make_sams(net(), "conv", [0, 1, 2], PREP, DoraSettings(**common), 8, "cpu")
    assert seen and all({k: kw[k] for k in OPTIONS} == OPTIONS for kw in seen)


def test_a_method_overrides_a_default_and_keeps_the_help():
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(RenderSettings)}
    for cls, key, value in [(DoraSettings, "steps", 48), (InversionSettings, "betas", [0.5, 0.9]),
                            (CaricatureSettings, "param", "fourier")]:
        f = next(f for f in dataclasses.fields(cls) if f.name == key)
        assert (f.default_factory() if callable(f.default_factory) else f.default) == value
        assert f.metadata["help"] == helps[key] and helps[key] in describe(cls)
    assert DreamSettings().steps == RenderSettings().steps == 200


def test_settings_reject_bad_values_naming_every_key():
    with pytest.raises(ValueError, match=r"steps: must be >= 0, got -1; DreamSettings.optimizer: 'sgd' is not one"):
        DreamSettings(steps=-1, optimizer="sgd")
