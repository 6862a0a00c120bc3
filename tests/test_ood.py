"""OOD detectors against plain numpy, the registry, and `peekflow score` / `peekflow table` end to end."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from peekflow import cli
from peekflow.features.store import FeatureSet, StoreWriter
from peekflow.ood.metrics import ood_metrics
from peekflow.ood.base import Detector, available, build, register
from peekflow.ood.table import COLUMNS, build_table

LAYER = "layer4"


def feature_set(logits=None, features=None, paths=None, name="data"):
    n = len(logits) if logits is not None else len(features)
    return FeatureSet(name=name, logits=logits, features=features, labels=np.zeros(n, dtype=np.int64),
                      paths=paths if paths is not None else [f"/{name}/{i}.png" for i in range(n)])


def write_store(path, logits, features, paths):
    n, k = logits.shape
    writer = StoreWriter(path, n, k, {LAYER: features.shape[1]}, {"model": "tiny", "dataset": path.stem})
    writer.write(0, logits, np.full(n, -1), paths, {LAYER: features}, {LAYER: features})
    writer.finish()
    return path


# --- detectors against numpy ---------------------------------------------------------------------------------------

def test_msp_matches_numpy():
    z = np.random.default_rng(0).normal(0, 3, (30, 7))
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    s = build("msp").score(feature_set(z))
    assert s.dtype == np.float64
    np.testing.assert_allclose(s, probs.max(axis=1), rtol=1e-12)


def test_msp_is_stable_for_large_logits():
    z = np.array([[1000.0, 0.0], [5000.0, 5000.0]])
    np.testing.assert_allclose(build("msp").score(feature_set(z)), [1.0, 0.5])


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0, 10.0])
def test_energy_matches_numpy(t):
    z = np.random.default_rng(1).normal(0, 3, (30, 7)).astype(np.float32)
    expected = t * np.log(np.exp(z.astype(np.float64) / t).sum(axis=1))
    s = build("energy", {"temperature": t}).score(feature_set(z))
    assert s.dtype == np.float64
    np.testing.assert_allclose(s, expected, rtol=1e-10)


def brute_knn(bank, queries, k):
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    dist = np.sqrt(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return -np.sort(dist, axis=1)[:, k - 1]


@pytest.mark.parametrize("k, batch_size", [(1, 4096), (5, 4096), (5, 3), (40, 7)])
def test_knn_matches_brute_force(k, batch_size):
    rng = np.random.default_rng(k)
    bank = rng.normal(size=(40, 16)).astype(np.float32)
    queries = rng.normal(size=(23, 16)).astype(np.float32) * 5  # unnormalised on purpose
    det = build("knn", {"k": k, "batch_size": batch_size}).fit(feature_set(features=bank, name="train"))
    s = det.score(feature_set(features=queries, name="val"))
    assert s.dtype == np.float64 and s.shape == (23,)
    np.testing.assert_allclose(s, brute_knn(bank.astype(np.float64), queries.astype(np.float64), k), atol=1e-5)


def test_knn_refuses_overlapping_paths(tmp_path):
    real = tmp_path / "img"
    real.mkdir()
    (real / "a.png").write_bytes(b"")
    (tmp_path / "link").symlink_to(real)
    bank = feature_set(features=np.eye(3), paths=[str(real / "a.png"), "/data/b.png", "/data/c.png"], name="train")
    det = build("knn", {"k": 2}).fit(bank)
    query = feature_set(features=np.eye(3)[:2], paths=["/other/x.png", str(tmp_path / "link" / "a.png")], name="val")
    with pytest.raises(ValueError, match=r"1 image\(s\) of 'val'.*a\.png"):
        det.score(query)
    via_dotdot = feature_set(features=np.eye(3)[:1], paths=["/data/sub/../c.png"], name="test")
    with pytest.raises(ValueError, match="c.png"):
        det.score(via_dotdot)


def test_knn_setting_errors():
    with pytest.raises(ValueError, match="k=5 exceeds the bank size 3"):
        build("knn", {"k": 5}).fit(feature_set(features=np.eye(3)))
    with pytest.raises(ValueError, match="knn: k must be a positive integer"):
        build("knn", {"k": 0})
    with pytest.raises(RuntimeError, match="fit"):
        build("knn").score(feature_set(features=np.eye(3)))
    with pytest.raises(ValueError, match="no features loaded"):
        build("knn", {"k": 1}).fit(feature_set(logits=np.eye(3)))


# --- registry ------------------------------------------------------------------------------------------------------

def test_registry():
    assert {"msp", "energy", "knn"} <= set(available())
    with pytest.raises(ValueError, match=r"unknown OOD method 'nope'; valid methods: .*'energy'.*'knn'.*'msp'"):
        build("nope")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['kk'\]; valid settings: \['k', 'samples_per_class', 'seed', 'backend', 'batch_size'\]"):
        build("knn", {"kk": 3})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['temperature'\]"):
        build("msp", {"temperature": 2})
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        build("energy", {"temperature": 0})
    assert build("energy", {"temperature": 2}).settings() == {"temperature": 2.0}
    with pytest.raises(ValueError, match="registered twice"):
        register("msp")(type("Other", (Detector,), {}))


# --- score and table CLIs end to end -------------------------------------------------------------------------------

@pytest.fixture
def main():
    return cli.main


@pytest.fixture
def stores(tmp_path):
    rng = np.random.default_rng(0)

    def make(name, n, in_dist):
        labels = rng.integers(0, 4, n)
        centres = np.eye(4, 12) * 6
        feats = (centres[labels] if in_dist else rng.normal(0, 2, (n, 12))) + rng.normal(0, 1, (n, 12))
        logits = feats[:, :4] * (1.5 if in_dist else 0.5) + rng.normal(0, 0.5, (n, 4))
        paths = [f"/data/{name}/{i}.png" for i in range(n)]
        return str(write_store(tmp_path / f"{name}.h5", logits.astype(np.float32), feats.astype(np.float32), paths))

    return {"train": make("train", 60, True), "val": make("val", 25, True),
            "textures": make("textures", 20, False), "noise": make("noise", 15, False)}


def test_score_and_table_cli(main, stores, tmp_path):
    evals = [f"--eval={n}={stores[n]}" for n in ("val", "textures", "noise")]
    runs = {"msp": [], "energy": ["--settings", '{"temperature": 2}'],
            "knn": ["--settings", '{"k": 3, "batch_size": 4}', "--layer", LAYER, "--fit-store", stores["train"]]}
    files = {}
    for method, extra in runs.items():
        files[method] = str(tmp_path / "scores" / f"{method}.h5")
        assert main(["score", "--method", method, *extra, *evals, "--out", files[method]]) == 0
    with h5py.File(files["knn"]) as h5:
        assert h5.attrs["complete"] and h5.attrs["higher_is_id"] and h5.attrs["method"] == "knn"
        assert json.loads(h5.attrs["settings"]) == {"k": 3, "batch_size": 4, "samples_per_class": None, "seed": 0,
                                                     "backend": "auto"}
        assert h5.attrs["layer"] == LAYER and h5.attrs["fit_store"] == stores["train"]
        assert h5["val"].dtype == np.float64 and h5["val"].shape == (25,)

    csv, md = tmp_path / "ood_table.csv", tmp_path / "ood_table.md"
    args = ["table", *[f"--scores={m}={f}" for m, f in files.items()], "--id", "val", "--ood", "textures", "noise",
            "--out-csv", str(csv), "--out-md", str(md)]
    assert main(args) == 0
    table = pd.read_csv(csv)
    assert list(table.columns) == COLUMNS
    assert len(table) == 3 * 3
    assert {(m, d) for m, d in zip(table.method, table.ood_dataset)} == {
        (m, d) for m in runs for d in ("textures", "noise", "average")}
    metrics = ["auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out"]
    assert ((table[metrics] >= 0) & (table[metrics] <= 100)).all().all()
    for method, path in files.items():
        with h5py.File(path) as h5:
            expected = {d: ood_metrics(h5["val"][:], h5[d][:]) for d in ("textures", "noise")}
        rows = table[table.method == method].set_index("ood_dataset")
        for d, m in expected.items():
            for key in metrics:
                assert rows.loc[d, key] == pytest.approx(m[key], abs=0.005 + 1e-9)
            assert (rows.loc[d, "n_id"], rows.loc[d, "n_ood"]) == (25, m["n_ood"])
        for key in metrics:
            mean = np.mean([m[key] for m in expected.values()])
            assert rows.loc["average", key] == pytest.approx(mean, abs=0.005 + 1e-9)
        assert (rows.loc["average", "n_id"], rows.loc["average", "n_ood"]) == (25, 35)
    assert table[table.method == "knn"].auroc.iloc[0] > 90  # clustered ID vs diffuse OOD is easy for KNN
    text = md.read_text().splitlines()
    assert "higher = more in-distribution" in text[0] and "fpr95_openood" in text[1] and text[3].startswith("|")


def test_score_cli_errors(main, stores, tmp_path, capsys):
    out = tmp_path / "knn.h5"
    assert main(["score", "--method", "knn", "--layer", LAYER, f"--eval=val={stores['val']}", "--out", str(out)]) == 1
    assert "--fit-store" in capsys.readouterr().err and not out.exists()
    # the bank must not be the data being scored
    assert main(["score", "--method", "knn", "--settings", '{"k": 3}', "--layer", LAYER, "--fit-store",
                 stores["val"], f"--eval=val={stores['val']}", "--out", str(out)]) == 1
    assert "/data/val/0.png" in capsys.readouterr().err and not out.exists()
    assert main(["score", "--method", "msp", "--settings", "{k: 1}", f"--eval=val={stores['val']}",
                 "--out", str(out)]) == 1
    assert "--settings: not valid JSON" in capsys.readouterr().err
    assert main(["score", "--method", "msp", "--eval", "val", "--out", str(out)]) == 1
    assert "expected NAME=PATH" in capsys.readouterr().err


def test_table_errors(stores, tmp_path):
    from peekflow.ood.scoring import score_stores

    path = tmp_path / "msp.h5"
    score_stores("msp", {}, None, None, {"val": stores["val"], "noise": stores["noise"]}, path)
    with pytest.raises(ValueError, match=rf"{path} has no data set\(s\) \['textures'\]"):
        build_table({"msp": path}, "val", ["noise", "textures"])
    with h5py.File(path, "a") as h5:
        h5.attrs["complete"] = False
    with pytest.raises(ValueError, match=rf"{path} is incomplete"):
        build_table({"msp": path}, "val", ["noise"])
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        build_table({"msp": tmp_path / "missing.h5"}, "val", ["noise"])


# --- gather: per-data-set score files joined into one ----------------------------------------------------------------

def h5_contents(path):
    """File attributes, and per data set its values and attributes, of a score file."""
    with h5py.File(path) as h5:
        return dict(h5.attrs), {name: (h5[name].dtype, h5[name][:], dict(h5[name].attrs)) for name in h5}


@pytest.mark.parametrize("method, settings, fit", [("msp", {}, None), ("knn", {"k": 3}, "train")])
def test_gathered_parts_equal_one_score_file_of_every_set(main, stores, tmp_path, method, settings, fit):
    from peekflow.ood.scoring import score_stores

    fit_store = stores[fit] if fit else None
    names = ["val", "textures", "noise"]
    whole = tmp_path / "whole.h5"
    score_stores(method, settings, LAYER, fit_store, {n: stores[n] for n in names}, whole)
    parts = [tmp_path / method / f"{n}.h5" for n in names]
    for n, part in zip(names, parts):
        score_stores(method, settings, LAYER, fit_store, {n: stores[n]}, part)
    out = tmp_path / f"{method}.h5"
    assert main(["gather-scores", "--parts", *map(str, parts), "--out", str(out)]) == 0
    (attrs, data), (expected_attrs, expected) = h5_contents(out), h5_contents(whole)
    assert attrs == expected_attrs and attrs["complete"] and attrs["method"] == method
    assert sorted(data) == sorted(expected) == sorted(names)
    for n in names:
        assert data[n][0] == expected[n][0] == np.float64
        np.testing.assert_array_equal(data[n][1], expected[n][1])
        assert data[n][2] == expected[n][2] == {"store": stores[n]}


def test_gather_errors_name_the_file_at_fault(main, stores, tmp_path, capsys):
    from peekflow.ood.scoring import gather_scores, score_stores

    def part(name, method="knn", settings={"k": 3}, **attrs):
        path = tmp_path / f"{name}_{len(list(tmp_path.glob('*.h5')))}.h5"
        score_stores(method, settings, LAYER, stores["train"] if method == "knn" else None, {name: stores[name]}, path)
        with h5py.File(path, "a") as h5:
            h5.attrs.update(attrs)
        return path

    out = tmp_path / "out" / "knn.h5"
    val = part("val")
    cases = [
        (part("noise", settings={"k": 2}), r"settings: '\{.*\"k\": 2.*\}' here, '\{.*\"k\": 3.*\}' there"),
        (part("noise", method="msp", settings={}), r"fit_store: '' here, '.*train.h5' there.*method: 'msp' here"),
        (part("noise", fit_store="other.h5"), r"fit_store: 'other.h5' here"),
        (part("noise", checkpoint="model.pt"), r"checkpoint: 'model.pt' here, absent there"),
    ]
    for other, message in cases:
        with pytest.raises(ValueError, match=rf"score file {other} does not match {val}, the first part \(.*{message}"):
            gather_scores([val, other], out)
    with pytest.raises(ValueError, match=rf"score file {(twice := part('val'))} holds data set 'val', already given by {val}"):
        gather_scores([val, part("noise"), twice], out)
    incomplete = part("noise", complete=False)
    with pytest.raises(ValueError, match=rf"score file {incomplete} is incomplete"):
        gather_scores([val, incomplete], out)
    with pytest.raises(FileNotFoundError, match=rf"score file {tmp_path / 'missing.h5'} does not exist"):
        gather_scores([val, tmp_path / "missing.h5"], out)
    assert main(["gather-scores", "--parts", str(val), str(incomplete), "--out", str(out)]) == 1
    assert f"{incomplete} is incomplete" in capsys.readouterr().err
    assert not out.parent.exists() or not list(out.parent.iterdir())  # nothing written, no temporary left


def test_resolved_paths_equal_realpath_of_abspath(tmp_path, monkeypatch):
    """One directory listing per folder instead of an lstat per path must resolve exactly as os.path.realpath
    does: linked folders and files, '.', '..', '//', a trailing '/', relative paths, missing folders."""
    import os

    from peekflow.ood.base import resolved_paths

    (tmp_path / "real").mkdir()
    (tmp_path / "other").mkdir()
    for name in ("real/a.png", "real/b.png", "other/c.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "real" / "l.png").symlink_to("../other/c.png")
    (tmp_path / "linkdir").symlink_to("real")
    monkeypatch.chdir(tmp_path)
    base = str(tmp_path)
    paths = ["real/a.png", f"{base}/linkdir/b.png", f"{base}/linkdir/l.png", "linkdir/../real/l.png",
             f"{base}//real/./a.png", "/", "/x", "/missing/y.png", "./other/c.png", f"{base}/real/", f"{base}/real/l.png"]
    assert resolved_paths(["", *paths]) == [os.path.realpath(os.path.abspath(p)) for p in paths]
    # absolute, normalised paths: taken as they are only when no folder is a link or holds one
    real = os.path.realpath(base)
    for group in ([f"{real}/other/c.png", f"{real}/real/a.png"], [f"{real}/other/c.png", f"{real}/linkdir/b.png"],
                  [f"{real}/real/a.png", f"{real}/real/l.png"], [f"{real}/real/.b.png"], [f"{real}/real/a\n.png"]):
        assert resolved_paths(group) == [os.path.realpath(p) for p in group]
