"""Top-N by relevance (neurons.relevance_rank, `peekflow topn` with rank_by relevance): equal to a brute force (every
image's channel relevances at once, then a stable argsort), at any batch size; explain: label explains the labels;
the CLI names what is missing; the settings class without torch agrees with the relevance module."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, write_folder
from peekflow.data.folder import Preprocessing
from peekflow.features.store import StoreWriter
from peekflow.models.registry import build_model
from peekflow.neurons.relevance_rank import channel_scores, top_n_relevance
from peekflow.neurons.topn import RELEVANCE_METHODS, RankSettings, read_topn
from peekflow.neurons.patches import load_images
from peekflow.synthesis.relevance import METHODS

PREP = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": None, "crop": None,
        "interpolation": "bilinear"}


@pytest.fixture
def store(tmp_path):
    folder = write_folder(tmp_path / "images", ["a", "b", "c"], per_class=7, size=32)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    labels = np.array([["a", "b", "c"].index(p.split("/")[-2]) for p in paths])
    writer = StoreWriter(tmp_path / "store.h5", len(paths), 3, {"layer4": 8},
                         {"model": "tiny", "dataset": "d", "preprocessing": json.dumps(PREP)})
    writer.h5["paths"][:] = paths
    writer.h5["labels"][:] = labels
    writer.finish()
    torch.manual_seed(0)
    model = build_model("small_resnet", 3, widths=[4, 8, 8, 8]).eval()
    return tmp_path / "store.h5", paths, labels, model


def brute_force(model, paths, classes, n, method="epsilon_plus_flat"):
    prep = Preprocessing(**PREP)
    x = (torch.stack(load_images(paths, prep)) - 0.5) / 0.25
    scores = channel_scores(model, x, "layer4", classes, method)  # [N, C], all images at once
    order = np.argsort(-scores, axis=0, kind="stable")[:n].T
    return order, np.take_along_axis(scores.T, order, 1)


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_equals_brute_force(store, batch_size):
    path, paths, _, model = store
    got = top_n_relevance(path, "layer4", 5, model, RankSettings(rank_by="relevance", batch_size=batch_size))
    order, values = brute_force(model, paths, None, 5)
    np.testing.assert_array_equal(got.indices, order)
    np.testing.assert_allclose(got.activations, values, rtol=1e-5, atol=1e-6)
    assert got.paths[2, 0] == paths[order[2, 0]] and got.attrs["rank_by"] == "relevance"


def test_explain_label_and_guided_backprop(store):
    path, paths, labels, model = store
    s = RankSettings(rank_by="relevance", explain="label", relevance="guided_backprop", batch_size=8)
    got = top_n_relevance(path, "layer4", 3, model, s)
    order, _ = brute_force(model, paths, labels, 3, "guided_backprop")
    np.testing.assert_array_equal(got.indices, order)
    predicted, _ = brute_force(model, paths, None, 3, "guided_backprop")
    assert not np.array_equal(order, predicted)  # an untrained model's predictions are not the labels


def test_cli_needs_the_model_and_writes_the_file(store, tmp_path, tiny_checkpoint, capsys):
    from peekflow.cli import main

    path = store[0]
    settings = json.dumps({"rank_by": "relevance", "batch_size": 5})
    assert main(["topn", "--store", str(path), "--layer", "layer4", "--n", "2", "--settings", settings,
                 "--out", str(tmp_path / "t.h5")]) == 1
    assert "rank_by relevance runs the model: give --model and --checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "t.h5").exists()
    assert main(["topn", "--store", str(path), "--layer", "layer4", "--n", "2", "--settings", settings,
                 "--model", json.dumps(TINY_MODEL), "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
                 "--out", str(tmp_path / "t.h5")]) == 0
    topn = read_topn(tmp_path / "t.h5")
    assert topn.indices.shape == (8, 2) and topn.attrs["explain"] == "predicted"


def test_settings_choices_match_the_relevance_module():
    assert RELEVANCE_METHODS == METHODS
