"""Degenerate OOD fits are named: a low-rank Mahalanobis covariance, a KNN bank too small for k or for the classes."""

import logging

import numpy as np
import pytest

from peekflow.features.store import FeatureSet
from peekflow.ood.base import build


def feature_set(features, labels, classes, name="train"):
    n = len(features)
    return FeatureSet(name, np.zeros((n, classes), np.float32), np.asarray(features, np.float32), np.asarray(labels),
                      [f"/{name}/{i}.png" for i in range(n)])


def test_mahalanobis_with_one_image_per_class_is_refused(caplog):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"covariance of 'train' has rank 0 \(3 rows, 3 classes.*every score would "
                                         r"be equal"):
        build("mahalanobis").fit(feature_set(rng.normal(size=(3, 8)), [0, 1, 2], 3))
    with caplog.at_level(logging.WARNING, logger="peekflow"):
        build("mahalanobis").fit(feature_set(rng.normal(size=(6, 8)), [0, 1, 2] * 2, 3))
    assert "covariance rank 3 of 8 feature dimensions (6 rows, 3 classes: at least 11 rows" in caplog.text


def test_knn_bank_smaller_than_k_or_the_classes(caplog):
    bank = feature_set(np.random.default_rng(1).normal(size=(4, 8)), [0, 1, 2, 3], 10)
    with pytest.raises(ValueError, match=r"k=5 exceeds the bank size 4 of 'train': choose k <= 4"):
        build("knn", {"k": 5}).fit(bank)
    with caplog.at_level(logging.WARNING, logger="peekflow"):
        build("knn", {"k": 2}).fit(bank)
    assert ("bank 'train' has no rows of 6 of the 10 classes (e.g. class 4, 5, 6, 7, 8): their ID images have no "
            "reference point") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="peekflow"):  # an unlabelled bank: only its size can tell
        build("knn", {"k": 2}).fit(feature_set(np.ones((4, 8)), [-1] * 4, 10))
    assert "bank 'train' has 4 rows for 10 classes: some classes have no reference point" in caplog.text


def write_store(path, features, labels, classes):
    from peekflow.features.store import StoreWriter

    n = len(features)
    logits = np.asarray(features, np.float32)[:, :classes]
    writer = StoreWriter(path, n, classes, {"layer4": features.shape[1]}, {"model": "tiny", "dataset": path.stem})
    writer.write(0, logits, np.asarray(labels), [f"/{path.stem}/{i}.png" for i in range(n)],
                 {"layer4": features.astype(np.float32)}, {"layer4": features.astype(np.float32)})
    writer.finish()
    return str(path)


def test_warnings_reach_the_score_file_and_the_tables_notes(tmp_path):
    """A rank-deficient covariance and a bank without every class are named in the CSV's notes column (every row of
    that method) and under the markdown table, through per-set parts and their gather, not only in the log."""
    import pandas as pd

    from peekflow import cli
    from peekflow.ood.scoring import read_notes

    rng = np.random.default_rng(2)
    train = write_store(tmp_path / "train.h5", rng.normal(size=(6, 8)), [0, 1, 2] * 2, 4)
    sets = {name: write_store(tmp_path / f"{name}.h5", rng.normal(size=(10, 8)), np.full(10, -1), 4)
            for name in ("val", "ood")}
    files = {}
    for method, extra in {"mahalanobis": [], "knn": ["--settings", '{"k": 2}'], "msp": []}.items():
        fit = ["--layer", "layer4", "--fit-store", train] if method != "msp" else []
        parts = []
        for name, store in sets.items():
            parts.append(str(tmp_path / method / f"{name}.h5"))
            assert cli.main(["score", "--method", method, *extra, *fit, f"--eval={name}={store}",
                             "--out", parts[-1]]) == 0
        files[method] = str(tmp_path / f"{method}.h5")
        assert cli.main(["gather-scores", "--parts", *parts, "--out", files[method]]) == 0
    assert read_notes(files["mahalanobis"]) == [
        "mahalanobis: covariance rank 3 of 8 feature dimensions (6 rows, 3 classes: at least 11 rows are needed for "
        "full rank); distances are measured only within its 3-dim span"]
    assert read_notes(files["knn"]) == [
        "knn: the bank 'train' has no rows of 1 of the 4 classes (e.g. class 3): their ID images have no reference "
        "point"]
    assert read_notes(files["msp"]) == []

    csv, md = tmp_path / "t.csv", tmp_path / "t.md"
    assert cli.main(["table", *[f"--scores={m}={f}" for m, f in files.items()], "--id", "val", "--ood", "ood",
                     "--n-bootstrap", "0", "--out-csv", str(csv), "--out-md", str(md)]) == 0
    table = pd.read_csv(csv)
    notes = table.groupby("method").notes.agg(lambda s: set(s.fillna("")))
    assert notes["mahalanobis"] == {read_notes(files["mahalanobis"])[0]}  # the set's row and the average row
    assert notes["knn"] == {read_notes(files["knn"])[0]} and notes["msp"] == {""}
    text = md.read_text()
    assert "**Notes**" in text and f"- knn: {read_notes(files['knn'])[0].removeprefix('knn: ')}" in text
    assert f"- mahalanobis: {read_notes(files['mahalanobis'])[0].removeprefix('mahalanobis: ')}" in text
    assert "- msp" not in text


def test_vim_and_residual_name_a_bank_inside_their_principal_space(caplog):
    """40 prototypes in 128 dimensions (the embedded default's data-free banks): the principal space (64 dims) holds
    the whole bank, which both methods then say."""
    from ood_reference import problem

    _, _, train, _ = problem(d=128, n_train=40)
    for method in ("vim", "residual"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="peekflow"):
            build(method).fit(train)
        assert (f"{method}: the bank 'train' has 40 rows, no more than the principal space's 64 dimensions") in \
            caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="peekflow"):
            build(method, {"dim": 30}).fit(train)
        assert "principal space" not in caplog.text
