"""INVERT: AUC by ranks equals sklearn's, concepts from attributes, planted concepts (one, OR, AND) recovered, store
rows matched to attributes.csv, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from peekflow.cli import main
from peekflow.features.store import StoreWriter
from peekflow.neurons.invert import (InvertSettings, aligned_attributes, auc_from_ranks, beam_search,
                                     concepts_from_attributes, label_neurons)


def attributes(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "path": [f"val/x/{i:05d}.png" for i in range(n)],
        "split": "val",
        "class": rng.choice(["circle", "square", "star", "ring"], n),
        "colour": rng.choice(["red", "green", "blue", "white", "black"], n),
        "size": rng.choice(["small", "medium", "large"], n),
        "rotation": rng.integers(0, 360, n),
    })


def test_auc_from_ranks_equals_roc_auc_score_with_ties():
    from scipy.stats import rankdata

    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, 300).astype(float)  # many ties
    masks = rng.random((20, 300)) < rng.random((20, 1))
    assert np.allclose(auc_from_ranks(masks, rankdata(a)), [roc_auc_score(m, a) for m in masks])


def test_concepts_skip_path_split_numeric_and_duplicate_columns():
    table = attributes(50)
    table["shape"] = table["class"]  # the shapes set's class and shape columns agree
    table["constant"] = "x"
    c = concepts_from_attributes(table)
    assert "class=circle" in c.names and "colour=red" in c.names and "size=large" in c.names
    assert not any(n.split("=")[0] in ("path", "split", "rotation", "shape", "constant") for n in c.names)
    assert c.masks.shape == (len(c.names), 50)
    assert np.array_equal(c.masks[c.names.index("colour=red")], (table["colour"] == "red").to_numpy())
    with pytest.raises(ValueError, match="'hue'"):
        concepts_from_attributes(table, ["colour", "hue"])


def test_numeric_column_with_few_values_is_a_concept_and_a_measurement_is_named_in_the_log(caplog):
    table = attributes(200)
    table["digit"] = np.arange(200) % 6  # a digit class 0-5 stored as numbers
    with caplog.at_level("INFO", logger="peekflow"):
        c = concepts_from_attributes(table, where="digits/attributes.csv")
    assert [n for n in c.names if n.startswith("digit=")] == [f"digit={d}" for d in range(6)]
    assert np.array_equal(c.masks[c.names.index("digit=3")], (table["digit"] == 3).to_numpy())
    assert not any(n.startswith("rotation=") for n in c.names)  # 0-359: a measurement
    assert "numeric column(s) of digits/attributes.csv left out" in caplog.text and "rotation (" in caplog.text


def planted(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    return truth.astype(float) + 0.1 * np.random.default_rng(seed).normal(size=truth.size)


def test_recovers_a_planted_concept():
    table = attributes()
    truth = (table["colour"] == "red").to_numpy()
    label = beam_search(planted(truth), concepts_from_attributes(table), InvertSettings())
    assert label.formula == "colour=red" and label.length == 1 and label.auc > 0.999


@pytest.mark.parametrize("kind", ["or", "and"])
def test_recovers_a_planted_or_and_formula(kind):
    table = attributes()
    if kind == "or":
        truth = table["class"].isin(["circle", "star"]).to_numpy()
        expected = {"class=circle OR class=star", "class=star OR class=circle"}
    else:
        truth = ((table["colour"] == "red") & (table["size"] == "large")).to_numpy()
        expected = {"colour=red AND size=large", "size=large AND colour=red"}
    label = beam_search(planted(truth), concepts_from_attributes(table), InvertSettings(min_fraction=0.02))
    assert label.formula in expected and label.length == 2 and label.auc > 0.999
    assert np.array_equal(label.mask, truth)


def test_negation_and_fraction_limits():
    table = attributes()
    truth = (table["size"] != "small").to_numpy()  # about 2/3 of the images
    concepts = concepts_from_attributes(table)
    wide = beam_search(planted(truth), concepts, InvertSettings(max_fraction=0.9))
    assert wide.formula == "NOT size=small" and wide.auc > 0.999
    narrow = beam_search(planted(truth), concepts, InvertSettings(max_fraction=0.5))
    assert narrow.mask.mean() <= 0.5 and narrow.auc < 0.999
    with pytest.raises(ValueError, match="min_fraction"):
        beam_search(planted(truth), concepts, InvertSettings(min_fraction=0.9, max_fraction=0.95, negation=False))


def test_label_neurons_reports_auc_p_value_and_fraction():
    table = attributes()
    truth = (table["colour"] == "blue").to_numpy()
    acts = np.stack([planted(truth), np.random.default_rng(5).normal(size=len(table))], 1)
    out = label_neurons(acts, concepts_from_attributes(table), [0, 1], InvertSettings(max_length=2))
    assert list(out.columns) == ["neuron", "formula", "auc", "p_value", "length", "fraction"]
    row = out.iloc[0]
    assert row["formula"] == "colour=blue" and row["fraction"] == pytest.approx(truth.mean())
    assert row["p_value"] == pytest.approx(mannwhitneyu(acts[truth, 0], acts[~truth, 0], alternative="greater")
                                           .pvalue)
    assert out.iloc[1]["auc"] < 0.7  # noise: no formula of length 2 ranks it well


def test_store_rows_match_attributes_by_relative_path(tmp_path):
    csv = tmp_path / "set" / "attributes.csv"
    csv.parent.mkdir()
    attributes(4).to_csv(csv, index=False)
    store_paths = [str(tmp_path / "set" / "val/x/00002.png"), "resources/set/val/x/00000.png"]
    got = aligned_attributes(store_paths, csv)
    assert list(got["path"]) == ["val/x/00002.png", "val/x/00000.png"]
    with pytest.raises(ValueError, match=r"1 of 2 images of .* no row in .*attributes.csv.*val/x/00009.png"):
        aligned_attributes(["val/x/00001.png", "elsewhere/val/x/00009.png"], csv)


def write_store(path, paths, acts):
    w = StoreWriter(path, len(paths), 2, {"layer4": acts.shape[1]}, {"model": "m", "dataset": "d"})
    w.write(0, np.zeros((len(paths), 2)), np.zeros(len(paths), int), paths, {"layer4": acts}, {"layer4": acts})
    w.finish()


def test_cli_end_to_end(tmp_path, monkeypatch):
    from peekflow.neurons import label_figures

    titles = []
    draw = label_figures.plot_invert
    monkeypatch.setattr(label_figures, "plot_invert", lambda *a, title: (titles.append(title), draw(*a, title=title)))
    table = attributes(300)
    csv = tmp_path / "resources" / "set" / "attributes.csv"
    csv.parent.mkdir(parents=True)
    table.to_csv(csv, index=False)
    rows = np.random.default_rng(2).permutation(300)[:200]  # the store holds some images, in its own order
    sub = table.iloc[rows]
    acts = np.stack([planted((sub["class"] == "ring").to_numpy()), planted((sub["size"] == "small").to_numpy(), 1),
                     np.random.default_rng(3).normal(size=200)], 1).astype(np.float32)
    store = tmp_path / "store.h5"
    write_store(store, [f"resources/set/{p}" for p in sub["path"]], acts)
    out, fig = tmp_path / "n" / "invert.csv", tmp_path / "n" / "invert.png"
    args = ["invert", "--store", str(store), "--attributes", str(csv), "--layer", "layer4", "--settings",
            json.dumps({"beam_size": 3, "max_length": 2}), "--out", str(out), "--figure", str(fig)]
    assert main(args) == 0
    result = pd.read_csv(out)
    assert list(result["formula"][:2]) == ["class=ring", "size=small"] and fig.exists()
    assert (result["auc"][:2] > 0.999).all()
    assert titles == ["INVERT: m layer4 (3 neurons)"]  # the store's model named
    assert main(args[:6] + ["layer9"] + args[7:]) == 1
    assert main(args[:8] + [json.dumps({"beam": 3})] + args[9:]) == 1
