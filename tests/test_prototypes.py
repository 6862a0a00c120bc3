"""DeepDream and DeepInversion prototypes: they carry their class, are seeded, honour their settings, and the CLIs
write files that read back.

The model is hand-made so the right answer is known: a BatchNorm2d(3) (running mean 0, variance 1, identity affine)
whose per-channel spatial means are the logits, so class k's prototype must make colour channel k the brightest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from PIL import Image
from torch import nn

from peekflow.cli import run_stage, stage_parser
from peekflow.data.folder import Preprocessing
from peekflow.prototypes.deepdream import DreamSettings, make_deepdream
from peekflow.prototypes.deepinversion import InversionSettings, inversion_targets, make_deepinversion
from peekflow.prototypes.store import read_prototypes

PREP = Preprocessing(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
CLASSES = ["red", "green", "blue"]


class ColourNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.eval()

    def forward(self, x):
        return 4.0 * self.bn(x).mean((2, 3))


def target_accuracy(model, p) -> float:
    x = (torch.from_numpy(p.images) - 0.5) / 0.25
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == p.targets).mean())


def dream(**kw):
    s = DreamSettings(**({"size": 8, "steps": 20, "per_class": 2} | kw))
    return make_deepdream(ColourNet(), CLASSES, PREP, s, name="colour", device="cpu")


def invert(**kw):
    s = InversionSettings(**({"size": 8, "steps": 20, "per_class": 2} | kw))
    return make_deepinversion(ColourNet(), CLASSES, PREP, s, name="colour", device="cpu")


def test_deepdream_prototypes_carry_their_class():
    p = dream()
    assert p.method == "deepdream" and p.model == "colour" and p.classes == CLASSES
    assert p.targets.tolist() == [0, 0, 1, 1, 2, 2]  # class-major, M per class
    assert p.images.shape == (6, 3, 8, 8) and p.images.dtype == np.float32
    assert 0 <= p.images.min() and p.images.max() <= 1 and np.isfinite(p.losses).all()
    assert target_accuracy(ColourNet(), p) >= 0.9
    assert p.settings["size"] == 8 and p.settings["steps"] == 20 and p.settings["render"]["device"] == "cpu"


def test_deepinversion_prototypes_carry_their_class():
    p = invert(per_class=4)
    assert p.method == "deepinversion" and p.targets.tolist() == [0, 1, 2] * 4
    assert 0 <= p.images.min() and p.images.max() <= 1 and np.isfinite(p.losses).all()
    assert target_accuracy(ColourNet(), p) >= 0.9
    assert p.settings["jitter"] == 1  # round(30 * 8 / 224)
    assert "bn_stats" in p.settings["objective"]


@pytest.mark.parametrize("make", [dream, invert])
def test_same_seed_same_images_other_seed_other_images(make):
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.losses, b.losses)
    assert not np.allclose(a.images, c.images)


@pytest.mark.parametrize("make", [dream, invert])
def test_lr_zero_leaves_the_initial_image(make):
    still = make(lr=0.0, init_std=0.0, jitter=0)
    assert np.allclose(still.images, 0.5)
    moved = make(init_std=0.0)
    assert not np.allclose(moved.images, 0.5)


def total_variation(images: np.ndarray) -> float:
    return float((np.diff(images, axis=2) ** 2).sum() + (np.diff(images, axis=3) ** 2).sum())


def bn_mismatch(images: np.ndarray) -> float:
    """How far the batch's statistics at ColourNet's BatchNorm input (normalised pixels) are from its running ones
    (mean 0, variance 1): what DeepInversion's R_feature pulls down."""
    x = (images - 0.5) / 0.25
    return float(np.linalg.norm(x.mean((0, 2, 3))) + np.linalg.norm(x.var((0, 2, 3)) - 1))


def test_the_penalty_weights_pull_their_way():
    # more total-variation weight: smoother images; more R_feature weight: batch statistics nearer the running ones
    assert total_variation(dream(tv=50.0).images) < 0.9 * total_variation(dream(tv=0.0).images)
    assert total_variation(invert(tv_l2=50.0).images) < 0.5 * total_variation(invert(tv_l2=0.0).images)
    assert bn_mismatch(invert(r_feature=1.0).images) < 0.5 * bn_mismatch(invert(r_feature=0.0).images)


def test_deepdream_images_do_not_depend_on_the_batch_size():
    """Per-image loss, no transforms, per-image seeded start: the batch split changes nothing. (DeepInversion's
    batch-norm term is a statistic of the whole batch, so its images do depend on batch_size by design.)"""
    whole, split = dream(batch_size=64), dream(batch_size=4)
    assert np.allclose(whole.images, split.images, atol=1e-5)
    assert np.array_equal(dream(classes=[2], batch_size=1).images, dream(classes=[2]).images)


def test_fourier_param_is_seeded_and_batch_size_independent():
    a, b = dream(param="fourier", batch_size=64), dream(param="fourier", batch_size=4)
    assert np.allclose(a.images, b.images, atol=1e-5) and target_accuracy(ColourNet(), a) >= 0.9


def test_target_modes():
    s = InversionSettings(targets="cycle", per_class=2)
    assert inversion_targets(s, 3) == [0, 1, 2, 0, 1, 2]
    assert inversion_targets(InversionSettings(targets="cycle", n=5, classes=[2, 0]), 3) == [2, 0, 2, 0, 2]
    r1 = inversion_targets(InversionSettings(targets="random", n=50, seed=1), 3)
    assert r1 == inversion_targets(InversionSettings(targets="random", n=50, seed=1), 3)
    assert r1 != inversion_targets(InversionSettings(targets="random", n=50, seed=2), 3)
    assert set(r1) == {0, 1, 2}
    assert inversion_targets(InversionSettings(targets="one", target=1, n=4), 3) == [1, 1, 1, 1]
    assert invert(targets="one", target=2, n=3).targets.tolist() == [2, 2, 2]


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="needs `target`"):
        InversionSettings(targets="one")
    with pytest.raises(ValueError, match=r"targets: 'all' is not one of \['cycle', 'random', 'one'\]"):
        InversionSettings(targets="all")
    with pytest.raises(ValueError, match=r"classes \[5\]"):
        dream(classes=[5])
    with pytest.raises(ValueError, match="settings.size is not set"):
        make_deepdream(ColourNet(), CLASSES, PREP, DreamSettings(steps=1), device="cpu")


@pytest.mark.parametrize("stage,method", [("dream", "deepdream"), ("deepinversion", "deepinversion")])
def test_cli_writes_prototypes_and_grid(tmp_path, tiny_checkpoint, stage, method):
    out, grid = tmp_path / "p" / f"{method}.h5", tmp_path / "p" / f"{method}.png"
    parser, module = stage_parser(stage, f"peekflow {stage}")
    args = parser.parse_args(["--model", json.dumps(TINY_MODEL), "--checkpoint", str(tiny_checkpoint),
                              "--settings", json.dumps({"size": 16, "steps": 3, "per_class": 2}),
                              "--device", "cpu", "--threads", "1", "--out", str(out), "--grid", str(grid)])
    assert run_stage(module.run, args) == 0
    p = read_prototypes(out)
    assert p.method == method and p.model == "tiny" and p.classes == ["a", "b", "c"]
    assert p.images.shape == (6, 3, 16, 16) and sorted(p.targets.tolist()) == [0, 0, 1, 1, 2, 2]
    assert p.settings["steps"] == 3 and p.settings["checkpoint"] == str(tiny_checkpoint)
    with Image.open(grid) as img:
        assert img.format == "PNG" and img.size[0] > 2 * 32  # two columns of 2x-scaled 16 px cells

    bad = parser.parse_args(["--model", json.dumps(TINY_MODEL), "--checkpoint", str(tiny_checkpoint),
                             "--settings", json.dumps({"nope": 1}), "--out", str(tmp_path / "x.h5")])
    assert run_stage(module.run, bad) == 1 and not (tmp_path / "x.h5").exists()


class RivalNet(nn.Module):
    """Raising logit 0 (red) raises logit 1 faster, unless blue rises too: logit maximisation picks the rival."""

    def forward(self, x):
        r, g, b = x.mean((2, 3)).unbind(1)
        return torch.stack([r, 2 * r - 2 * b, g], 1)


def test_log_softmax_target_loss_beats_a_rival_class_where_the_raw_logit_does_not():
    def accuracy(target_loss):
        s = DreamSettings(size=8, steps=30, per_class=2, classes=[0], tv=0.0, l1_edge=0.0, l2_pixel=0.0,
                          target_loss=target_loss)
        return target_accuracy(RivalNet(), make_deepdream(RivalNet(), CLASSES, PREP, s, device="cpu"))

    assert accuracy("logit") == 0.0 and accuracy("log_softmax") == 1.0
    with pytest.raises(ValueError, match=r"target_loss: 'softmax' is not one of \['logit', 'log_softmax'\]"):
        DreamSettings(target_loss="softmax")
