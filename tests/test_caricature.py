"""Caricatures: the layer response of a caricature points where the reference's does, amplified; seeded references;
settings take effect; the CLI writes a prototype file whose targets are the references' classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, write_folder
from PIL import Image
from test_prototypes import CLASSES, PREP, ColourNet, target_accuracy

from peekflow.cli import run_stage, stage_parser
from peekflow.prototypes.caricature import (CaricatureSettings, choose_references, layer_response, load_references,
                                            make_caricatures)
from peekflow.prototypes.store import read_prototypes


def folder(tmp_path):
    # write_folder makes class i's images bright in colour channel i: red, green, blue
    return write_folder(tmp_path / "refs", CLASSES, per_class=4, size=8, seed=3)


def caricatures(root, **kw):
    s = CaricatureSettings(**({"layer": "bn", "size": 8, "steps": 30, "per_class": 1} | kw))
    return make_caricatures(ColourNet(), CLASSES, PREP, s, root, name="colour", device="cpu")


def low_contrast_folder(tmp_path):
    """Grey images, colour channel i raised by 0.12 for class i (plus noise): amplified x2, still inside [0,1]."""
    rng = np.random.default_rng(0)
    for i, name in enumerate(CLASSES):
        (tmp_path / "low" / name).mkdir(parents=True)
        img = 0.5 + 0.04 * rng.standard_normal((8, 8, 3))
        img[..., i] += 0.12
        Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(tmp_path / "low" / name / "0.png")
    return tmp_path / "low"


def test_caricatures_match_the_amplified_response(tmp_path):
    p = caricatures(low_contrast_folder(tmp_path), param="pixel", amplify=2.0, steps=80, jitter=0)
    assert p.method == "caricature" and p.targets.tolist() == [0, 1, 2]
    assert target_accuracy(ColourNet(), p) == 1.0  # the caricature of a red image is red to the model
    refs = load_references(p.settings["references"], PREP, 8)
    ref = layer_response(ColourNet(), refs, PREP, "bn", "cpu").flatten(1)
    car = layer_response(ColourNet(), torch.from_numpy(p.images), PREP, "bn", "cpu").flatten(1)
    assert (torch.nn.functional.cosine_similarity(car, ref, dim=1) > 0.95).all()
    along = (car * ref).sum(1) / ref.pow(2).sum(1)  # the caricature's response in units of the reference's
    assert torch.allclose(along, torch.full((3,), 2.0), atol=0.2)


def test_references_are_seeded_per_class(tmp_path):
    root = folder(tmp_path)
    a = choose_references(root, CLASSES, 2, seed=0)
    assert a == choose_references(root, CLASSES, 2, seed=0)
    assert [u for _, u in a] == [0, 0, 1, 1, 2, 2]
    assert any(choose_references(root, CLASSES, 2, seed=s) != a for s in range(1, 6))
    assert [u for _, u in choose_references(root, ["blue", "red"], 1, 0)] == [0, 1]  # only the model's classes
    with pytest.raises(ValueError, match="no folder named after a class"):
        choose_references(root, ["cat", "dog"], 1, 0)


def test_settings_take_effect(tmp_path):
    root = folder(tmp_path)
    base = caricatures(root, steps=10)

    def along_and_cosine(p):  # the caricatures' layer response along the references' (in their units), and its cosine
        refs = layer_response(ColourNet(), load_references(p.settings["references"], PREP, 8), PREP, "bn", "cpu")
        car = layer_response(ColourNet(), torch.from_numpy(p.images), PREP, "bn", "cpu")
        refs, car = refs.flatten(1), car.flatten(1)
        along = (car * refs).sum(1) / refs.pow(2).sum(1)
        return along.mean().item(), torch.nn.functional.cosine_similarity(car, refs, dim=1).mean().item()

    low = low_contrast_folder(tmp_path)
    weak, strong = (caricatures(low, param="pixel", steps=80, jitter=0, amplify=a) for a in (1.0, 2.0))
    assert along_and_cosine(strong)[0] > 1.5 * along_and_cosine(weak)[0]  # amplify 2 vs 1: a larger response
    # dot has no target: its response grows with the steps; cos_power 0 drops the cosine factor, so the response
    # points less along the reference's
    short, dot = (along_and_cosine(caricatures(root, steps=n, loss="dot")) for n in (5, 30))
    assert dot[0] > 2 * short[0]
    assert along_and_cosine(caricatures(root, steps=30, loss="dot", cos_power=0.0))[1] < dot[1] - 0.1
    frozen = caricatures(root, steps=10, lr=0.0, param="pixel", init_std=0.0)
    np.testing.assert_allclose(frozen.images, 0.5, atol=1e-6)  # lr 0: still the grey start
    np.testing.assert_array_equal(base.images, caricatures(root, steps=10).images)  # seeded
    with pytest.raises(ValueError, match="need `layer`"):
        caricatures(root, layer="")
    with pytest.raises(ValueError, match="layer\\(s\\) \\['nope'\\] not in ColourNet"):
        caricatures(root, layer="nope")


def test_cli_writes_caricatures_and_pairs_grid(tmp_path, tiny_checkpoint):
    root = write_folder(tmp_path / "imgs", ["a", "b", "c", "other"], per_class=3, size=16)
    out, grid = tmp_path / "p" / "caricature.h5", tmp_path / "p" / "caricature.png"
    parser, module = stage_parser("caricature", "peekflow caricature")
    args = parser.parse_args(["--model", json.dumps(TINY_MODEL), "--checkpoint", str(tiny_checkpoint),
                              "--images", str(root), "--settings",
                              json.dumps({"layer": "layer3", "steps": 3, "per_class": 2}),
                              "--device", "cpu", "--threads", "1", "--out", str(out), "--grid", str(grid)])
    assert run_stage(module.run, args) == 0
    p = read_prototypes(out)
    assert p.images.shape == (6, 3, 16, 16) and p.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert all(f"/{['a', 'b', 'c'][t]}/" in path for t, path in zip(p.targets, p.settings["references"]))
    with Image.open(grid) as img:  # reference and caricature side by side: 12 cells in 8 columns
        assert img.format == "PNG" and img.size[0] > 8 * 32
