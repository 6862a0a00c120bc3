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


@pytest.mark.parametrize("method", ["vim", "residual", "vim_deepdream", "residual_deepinversion"])
def test_vim_and_residual_refuse_a_bank_inside_their_principal_space(method):
    """40 prototypes in 128 dimensions (the embedded default's data-free banks): the principal space (64 dims) holds
    the whole bank, so what is left, the residual space, is rounding: refused, naming method, store, rows, dims and
    what to do; a dim below the rows fits. Duplicated rows count by their rank."""
    from ood_reference import problem

    _, _, train, _ = problem(d=128, n_train=40)
    with pytest.raises(ValueError, match=rf"^{method}: the fit store 'train' has 40 rows in 128 feature dimensions, no "
                                         r"more than the principal space's 64 dimensions: .* set by rounding; fit on "
                                         r"more than 64 rows, or set dim to at most 39$"):
        build(method).fit(train)
    build(method, {"dim": 39}).fit(train)
    _, _, twice, _ = problem(d=128, n_train=40)
    for part in ("features", "logits", "labels"):
        setattr(twice, part, np.concatenate([getattr(train, part)] * 2))
    twice.paths = [f"/twice/{i}.png" for i in range(80)]
    with pytest.raises(ValueError, match=r"has 80 rows \(of rank 40\) in 128 feature dimensions, no more than the "
                                         r"principal space's 64 .* or set dim to at most 39$"):
        build(method).fit(twice)


def test_rmds_and_gmm_name_their_singular_covariances(caplog):
    """The documented variants on a bank of fewer rows than dimensions reach the notes: RMDS's pseudo-inverses (class
    and background covariance), GMM's reg off the span of each class's rows."""
    rng = np.random.default_rng(3)
    bank = feature_set(rng.normal(size=(12, 16)), np.arange(12) % 4, 4, name="prototypes")
    with caplog.at_level(logging.WARNING, logger="peekflow"):
        build("rmds_deepdream").fit(bank)
        build("gmm_deepdream").fit(bank)
    assert ("rmds_deepdream: covariance rank 8 of 16 feature dimensions (12 rows, 4 classes: at least 20 rows are "
            "needed for full rank); distances are measured only within its 8-dim span") in caplog.text
    assert ("rmds_deepdream: background covariance rank 11 of 16 feature dimensions (12 rows: at least 17 rows are "
            "needed for full rank)") in caplog.text
    assert ("gmm_deepdream: 4 of 4 classes of 'prototypes' have no more rows than the 16 feature dimensions (fewest: "
            "3): their covariances are singular, and reg=1e-06 on the diagonal sets the density off the span of their "
            "rows") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="peekflow"):  # enough rows: nothing to name
        build("rmds").fit(feature_set(rng.normal(size=(60, 8)), np.arange(60) % 3, 3))
        build("gmm").fit(feature_set(rng.normal(size=(60, 8)), np.arange(60) % 3, 3))
    assert caplog.text == ""
    with pytest.raises(ValueError, match=r"^rmds: the covariance of 'train' has rank 0 \(3 rows, 3 classes"):
        build("rmds").fit(feature_set(rng.normal(size=(3, 8)), [0, 1, 2], 3))


def fit_size_problems(methods: dict, per_class: int = 4, train_per_class: int = 300) -> list[str]:
    """The checks before any job of the embedded default (40-row prototype banks, 128-dim layer4) with `methods`."""
    import yaml

    from peekflow.workflow.preflight import ood_fit_size_problems
    from peekflow.workflow.replicas import expand
    from test_config_checks import validated
    from workflow import ROOT

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["ood"]["methods"] = methods
    config["generate"]["sets"]["shapes"]["splits"]["train"] = train_per_class
    for bank in ("deepdream", "deepinversion"):
        config["prototypes"]["methods"][bank]["per_class"] = per_class
    return ood_fit_size_problems(expand(validated(config)), "shapes_resnet")


def test_undetermined_fits_are_refused_before_any_job_naming_method_bank_rows_and_dimension():
    bank = "its fit store, the {0} prototypes (prototypes.methods.{0}: per_class x classes rows) of shapes_resnet's " \
           "layer4 features, has "
    inside = ("40 rows in 128 feature dimensions, no more than the principal space's 64 dimensions: it lies inside "
              "that space, so its residual space, and every score, is set by rounding; fit on more than 64 rows, or "
              "set dim to at most 39")
    assert fit_size_problems({"vim_deepdream": {}, "residual_deepinversion": {}, "vim_deepinversion": {"dim": 39},
                              "residual": {}, "knn_deepdream": {"k": [1, 41]}, "nnguide_deepinversion": {"k": 40}}) == [
        "ood.methods.vim_deepdream: " + bank.format("deepdream") + inside,
        "ood.methods.residual_deepinversion: " + bank.format("deepinversion") + inside,
        "ood.methods.knn_deepdream (run knn_deepdream_k41): " + bank.format("deepdream") +
        "40 rows, fewer than k=41: choose k <= 40 (or a larger bank)"]
    one_each = ("one row in each of its 10 classes: every row is its class mean, so the covariance is 0 and every "
                "score would be equal; fit on more than one image per class")
    tied = {"mahalanobis_deepdream": {}, "rmds_deepinversion": {}, "gmm_deepdream": {}}
    assert fit_size_problems(tied, per_class=1) == [
        "ood.methods.mahalanobis_deepdream: " + bank.format("deepdream") + one_each,
        "ood.methods.rmds_deepinversion: " + bank.format("deepinversion") + one_each]
    assert fit_size_problems(tied, per_class=2) == []  # rank 10 of 128: the pseudo-inverse, named in the notes


def test_fits_on_a_generated_training_set_are_sized_from_its_split():
    train = "its fit store, ood.id_train 'shapes_train' of shapes_resnet's layer4 features, has "
    assert fit_size_problems({"vim": {}, "knn": {"k": 11, "samples_per_class": 1}}, train_per_class=6) == [
        "ood.methods.vim: " + train + "60 rows in 128 feature dimensions, no more than the principal space's 64 "
        "dimensions: it lies inside that space, so its residual space, and every score, is set by rounding; fit on "
        "more than 64 rows, or set dim to at most 59",
        "ood.methods.knn: " + train + "10 rows (samples_per_class drawn), fewer than k=11: choose k <= 10 (or a larger "
        "bank)"]
    assert fit_size_problems({"vim": {}, "mahalanobis": {}, "knn": {"k": 50}}) == []  # the default's 3,000 rows


def test_the_checks_before_any_job_include_the_fit_sizes():
    import yaml

    from peekflow.workflow.preflight import input_problems
    from peekflow.workflow.replicas import expand
    from test_config_checks import validated
    from workflow import ROOT

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["ood"]["methods"]["residual_deepdream"] = {}
    problems = input_problems(expand(validated(config)))
    assert [p for p in problems if p.startswith("ood.methods.")] == [
        "ood.methods.residual_deepdream: its fit store, the deepdream prototypes (prototypes.methods.deepdream: "
        "per_class x classes rows) of shapes_resnet's layer4 features, has 40 rows in 128 feature dimensions, no "
        "more than the principal space's 64 dimensions: it lies inside that space, so its residual space, and every "
        "score, is set by rounding; fit on more than 64 rows, or set dim to at most 39"]


def test_she_class_without_a_right_row_scores_zero_and_is_named(caplog):
    """SHE's documented variant: a class that the fit store never classifies right stores no pattern; an input
    predicted as it scores 0 (the least ID), the others the inner product with their class's pattern."""
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 1.0, (9, 6)).astype(np.float32)
    logits = np.zeros((9, 3), np.float32)
    logits[np.arange(9), [0, 0, 0, 1, 1, 1, 0, 1, 0]] = 5  # class 2's rows (the last three) predicted 0, 1, 0
    train = FeatureSet("train", logits, x, np.repeat([0, 1, 2], 3), [f"/t/{i}" for i in range(9)])
    test_x = rng.gamma(2.0, 1.0, (3, 6)).astype(np.float32)
    test = FeatureSet("test", np.eye(3, dtype=np.float32) * 5, test_x, np.full(3, -1), ["/s/0", "/s/1", "/s/2"])
    with caplog.at_level(logging.WARNING, logger="peekflow"):
        scores = build("she").fit(train).score(test)
    assert "she: 1 of 3 classes have no correctly classified row in the fit store 'train' (class 2)" in caplog.text
    x64, t64 = x.astype(np.float64), test_x.astype(np.float64)
    patterns = [x64[:3].mean(0), x64[3:6].mean(0)]
    np.testing.assert_allclose(scores, [t64[0] @ patterns[0], t64[1] @ patterns[1], 0.0], rtol=1e-12)
