"""ODIN, Mahalanobis and the KNN banks and backends against plain numpy; prototype feature stores; `peekflow score`
for image methods; the k sweep in the workflow."""

import json
import os

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_MODEL, write_folder
from peekflow import cli
from peekflow.data.folder import Preprocessing
from peekflow.features.store import FeatureSet, load_feature_set
from peekflow.ood import neighbours
from peekflow.ood.base import build
from peekflow.ood.knn import per_class_sample
from peekflow.ood.neighbours import NeighbourSearch, as_unit_rows, normalise_rows_
from peekflow.ood.odin import odin_scores
from peekflow.prototypes.quality import as_pil
from peekflow.prototypes.store import Prototypes, write_prototypes


def feature_set(features, labels=None, name="data", paths=None):
    n = len(features)
    return FeatureSet(name=name, logits=np.zeros((n, 2)), features=features,
                      labels=np.zeros(n, dtype=np.int64) if labels is None else labels,
                      paths=paths if paths is not None else [f"/{name}/{i}.png" for i in range(n)])


# --- ODIN -----------------------------------------------------------------------------------------------------------

def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def odin_reference(w, b, x, std, t, eps):
    """ODIN on a linear model z = W x + b, gradient written out: d CE(z/T, y) / dx = W^T (softmax(z/T) - e_y) / T."""
    flat = x.reshape(len(x), -1)
    z = flat @ w.T + b
    p = softmax(z / t)
    p[np.arange(len(z)), z.argmax(axis=1)] -= 1
    grad = (p / t) @ w
    perturbed = flat - eps * np.sign(grad) / np.repeat(std, x[0, 0].size)
    return softmax((perturbed @ w.T + b) / t).max(axis=1)


def linear_model(in_features, classes, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes)).eval()


@pytest.mark.parametrize("t, eps, scale", [(1.0, 0.0, 1), (1.0, 0.01, 1), (1000.0, 0.0014, 1), (10.0, 0.05, 1),
                                           (1000.0, 0.0014, 300)])  # scale 300: logit margins in the hundreds
def test_odin_matches_analytic_gradient(t, eps, scale):
    model = linear_model(3 * 4 * 4, 5).double()
    with torch.no_grad():
        model[1].weight *= scale
    x = np.random.default_rng(1).normal(size=(9, 3, 4, 4))
    std = np.array([0.2, 0.3, 0.5])
    w, b = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    s = odin_scores(model, torch.from_numpy(x), std, t, eps)
    assert s.dtype == np.float64 and s.shape == (9,)
    np.testing.assert_allclose(s, odin_reference(w, b, x, std, t, eps), rtol=1e-12)


def test_odin_on_an_image_folder_matches_numpy(tmp_path):
    """score_images: PNGs through the model's preprocessing, in sorted order, per-channel std, float32 model."""
    root = write_folder(tmp_path / "imgs", ["a", "b"], per_class=5, size=8)
    prep = Preprocessing(mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.5])
    model = linear_model(3 * 8 * 8, 4)
    det = build("odin", {"temperature": 100.0, "epsilon": 0.01, "batch_size": 3})
    s = det.score_images(model, root, prep, torch.device("cpu"))
    from PIL import Image

    files = sorted(root.glob("*/*.png"))
    x = np.stack([np.asarray(Image.open(f), dtype=np.float64).transpose(2, 0, 1) / 255 for f in files])
    x = (x - np.array(prep.mean)[:, None, None]) / np.array(prep.std)[:, None, None]
    w, b = model[1].weight.detach().double().numpy(), model[1].bias.detach().double().numpy()
    np.testing.assert_allclose(s, odin_reference(w, b, x, np.array(prep.std), 100.0, 0.01), rtol=1e-5)
    assert not any(p.requires_grad for p in model.parameters())


def test_odin_settings():
    assert build("odin").settings() == {"temperature": 1000.0, "epsilon": 0.0014, "batch_size": 64}
    with pytest.raises(ValueError, match=r"odin: epsilon must be a number in \[0, 1\)"):
        build("odin", {"epsilon": -0.1})
    with pytest.raises(ValueError, match="odin: temperature must be a positive number"):
        build("odin", {"temperature": 0})


def run_cli(*args):
    return cli.main([str(a) for a in args])


def test_odin_cli_without_perturbation_equals_msp_of_the_store(tmp_path, tiny_checkpoint, capsys):
    """ODIN with T=1 and eps=0 is MSP: through `peekflow score` on images, and on the store `peekflow extract` wrote."""
    root = write_folder(tmp_path / "val", ["a", "b", "c"], per_class=4)
    model = json.dumps(TINY_MODEL)
    store, odin, msp = tmp_path / "val.h5", tmp_path / "odin.h5", tmp_path / "msp.h5"
    assert run_cli("extract", "--model", model, "--checkpoint", tiny_checkpoint, "--images", root, "--dataset-name",
                   "val", "--settings", '{"layers": ["layer4"]}', "--device", "cpu", "--out", store) == 0
    assert run_cli("score", "--method", "odin", "--settings", '{"temperature": 1, "epsilon": 0}', "--model", model,
                   "--checkpoint", tiny_checkpoint, "--images", f"val={root}", "--device", "cpu", "--out", odin) == 0
    assert run_cli("score", "--method", "msp", "--eval", f"val={store}", "--out", msp) == 0
    with h5py.File(odin) as a, h5py.File(msp) as b:
        np.testing.assert_allclose(a["val"][:], b["val"][:], rtol=1e-5)
        assert a.attrs["complete"] and a.attrs["higher_is_id"] and a.attrs["method"] == "odin"
        assert json.loads(a.attrs["settings"]) == {"temperature": 1.0, "epsilon": 0.0, "batch_size": 64}
        assert a["val"].attrs["images"] == str(root) and a.attrs["checkpoint"] == str(tiny_checkpoint)
    capsys.readouterr()
    # the wrong inputs for each kind of method fail naming what to give
    assert run_cli("score", "--method", "odin", "--eval", f"val={store}", "--out", tmp_path / "x.h5") == 1
    assert "--images NAME=FOLDER, --model and --checkpoint" in capsys.readouterr().err
    assert run_cli("score", "--method", "msp", "--images", f"val={root}", "--out", tmp_path / "x.h5") == 1
    assert "give --eval NAME=STORE" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


# --- Mahalanobis ----------------------------------------------------------------------------------------------------

def mahalanobis_reference(train, labels, queries):
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(0) for c in classes])
    cov = sum((train[labels == c] - means[i]).T @ (train[labels == c] - means[i]) for i, c in enumerate(classes))
    precision = np.linalg.pinv(cov / len(train))
    d = np.stack([np.einsum("ij,jk,ik->i", queries - m, precision, queries - m) for m in means], axis=1)
    return -d.min(axis=1)


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_mahalanobis_matches_numpy(rank_deficient):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 80)
    train = rng.normal(size=(80, 8)) @ rng.normal(size=(8, 8)) + 3 * np.eye(4, 8)[labels]
    queries = rng.normal(size=(30, 8)) * 2
    if rank_deficient:  # a dead unit: pinv, not inv
        train[:, 5] = queries[:, 5] = 0.0
    det = build("mahalanobis", {"batch_size": 7}).fit(feature_set(train.astype(np.float32), labels, "train"))
    s = det.score(feature_set(queries, name="val"))
    assert s.dtype == np.float64 and s.shape == (30,)
    expected = mahalanobis_reference(train.astype(np.float32).astype(np.float64), labels, queries)
    np.testing.assert_allclose(s, expected, rtol=1e-8, atol=1e-8)


def test_mahalanobis_ignores_unlabelled_rows_and_needs_labels():
    rng = np.random.default_rng(4)
    train, labels = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    queries = rng.normal(size=(6, 5))
    extra = np.concatenate([train, rng.normal(size=(7, 5)) * 50])
    with_unlabelled = build("mahalanobis").fit(feature_set(extra, np.concatenate([labels, np.full(7, -1)]), "t"))
    np.testing.assert_allclose(with_unlabelled.score(feature_set(queries)), mahalanobis_reference(train, labels, queries),
                               rtol=1e-8)
    with pytest.raises(ValueError, match=r"fit store 'shapes_test' has no class labels \(all -1\)"):
        build("mahalanobis").fit(feature_set(train, np.full(40, -1), "shapes_test"))
    det = build("mahalanobis").fit(feature_set(train, labels, "train"))
    with pytest.raises(ValueError, match=r"1 image\(s\) of 'val'.*train/3.png"):
        det.score(feature_set(queries[:2], name="val", paths=["/val/0.png", "/train/3.png"]))


# --- KNN: backends, banks -------------------------------------------------------------------------------------------

def brute(bank, queries, k):
    """(k-th distances, neighbour indices) by numpy on normalised float64 copies."""
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    dist = np.sqrt(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return dist[np.arange(len(q)), order[:, -1]], order


@pytest.mark.parametrize("k, batch_size, chunk_values", [(1, 64, 1 << 24), (7, 5, 1 << 24), (7, 5, 40), (60, 9, 100)])
def test_backends_find_the_numpy_neighbours(monkeypatch, k, batch_size, chunk_values):
    monkeypatch.setattr(neighbours, "_CHUNK_VALUES", chunk_values)  # small: the torch backend merges bank chunks
    rng = np.random.default_rng(k)
    bank, queries = rng.normal(size=(150, 12)), rng.normal(size=(33, 12)) * 3
    kth, order = brute(bank, queries, k)
    unit_bank, unit_queries = as_unit_rows(bank), as_unit_rows(queries)
    for backend in ["faiss", "torch"]:
        search = NeighbourSearch(unit_bank, backend, batch_size)
        dist, index = search.search(unit_queries, k)
        np.testing.assert_array_equal(index, order)
        np.testing.assert_allclose(np.sqrt(dist), np.sort(np.sqrt(dist), axis=1))
        np.testing.assert_allclose(search.kth_distance(unit_queries, k), kth, atol=1e-6)
        det = build("knn", {"k": k, "backend": backend, "batch_size": batch_size}).fit(feature_set(bank, name="t"))
        np.testing.assert_allclose(det.score(feature_set(queries)), -kth, atol=1e-6)


@pytest.mark.parametrize("k, cols", [(3, 12 * 32), (3, 12 * 32 + 7), (5, 1000)])
def test_smallest_k_ranks_only_the_best_groups_and_is_exact(k, cols):
    d = torch.from_numpy(np.random.default_rng(cols).normal(size=(40, cols)).astype(np.float32))
    d[0, :] = 1.0  # ties everywhere: any k of them
    d[1, -3:] = -5.0  # the winners in the columns after the last whole group
    vals, idx = neighbours.smallest_k(d, k)
    assert cols // neighbours._GROUP >= 4 * k  # the grouped path
    np.testing.assert_array_equal(torch.sort(vals, 1).values, torch.topk(d, k, 1, largest=False).values)
    np.testing.assert_array_equal(torch.gather(d, 1, idx), vals)
    assert all(len(set(row)) == k for row in idx.tolist())


def test_torch_backend_with_grouped_chunks_finds_the_numpy_neighbours(monkeypatch):
    monkeypatch.setattr(neighbours, "_CHUNK_VALUES", 20 * 700)  # 700 columns per chunk: groups, a tail, merges
    rng = np.random.default_rng(3)
    bank, queries = rng.normal(size=(3000, 8)), rng.normal(size=(20, 8))
    kth, order = brute(bank, queries, 4)
    search = NeighbourSearch(as_unit_rows(bank), "torch", 20)
    dist, index = search.search(as_unit_rows(queries), 4)
    np.testing.assert_array_equal(index, order)
    np.testing.assert_allclose(search.kth_distance(as_unit_rows(queries), 4), kth, atol=1e-6)


def test_auto_backend_decides_without_torch_where_no_gpu_can_be():
    """auto asks torch only where a GPU library loads: without one, torch cannot see a GPU either (checked here), and
    the search runs on faiss with the threads set_threads gave -- in a fresh process, without importing torch."""
    import subprocess
    import sys

    from peekflow.device import no_gpu_possible, torch_threads

    if no_gpu_possible():
        assert not torch.cuda.is_available()
    torch.set_num_threads(1)
    assert torch_threads() == 1  # torch imported: its own count
    code = ("import sys, numpy as np\n"
            "from peekflow.device import set_threads, torch_threads\n"
            "set_threads(2)\n"
            "from peekflow.ood.neighbours import NeighbourSearch, resolve_backend, as_unit_rows\n"
            "search = NeighbourSearch(as_unit_rows(np.eye(4, dtype=np.float32)), 'auto')\n"
            "print(search.backend, torch_threads(), search._faiss.omp_get_max_threads(), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    threads = min(2, os.cpu_count())
    if no_gpu_possible() and neighbours.faiss_available():
        assert out == ["faiss", str(threads), str(threads), "False"]


def test_normalise_in_place_without_a_copy():
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    x[3] = 0
    expected = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = normalise_rows_(x, chunk=7)
    assert out is x
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    assert not x[3].any()
    assert as_unit_rows(x) is x  # float32 C-contiguous: normalised where it is
    doubles = np.ones((2, 3))
    assert as_unit_rows(doubles) is not doubles and doubles[0, 0] == 1.0  # other input: a normalised copy
    with pytest.raises(ValueError, match="float32"):
        normalise_rows_(doubles)


def test_knn_fit_normalises_a_float32_bank_in_place():
    bank = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32) * 5
    det = build("knn", {"k": 2, "backend": "torch"}).fit(feature_set(bank, name="t"))
    assert np.shares_memory(det._search.bank, bank)
    np.testing.assert_allclose(np.linalg.norm(bank, axis=1), 1.0, rtol=1e-6)


def test_samples_per_class_bank():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1, 2], [30, 20, 3])
    labels = np.concatenate([labels, [-1, -1]])
    bank, queries = rng.normal(size=(len(labels), 6)), rng.normal(size=(15, 6))
    rows = per_class_sample(labels, 5, seed=9, where="test")
    assert np.array_equal(rows, per_class_sample(labels, 5, seed=9, where="test"))  # seeded
    assert not np.array_equal(rows, per_class_sample(labels, 5, seed=10, where="test"))
    assert np.bincount(labels[rows]).tolist() == [5, 5, 3]  # a smaller class gives all it has; -1 rows none
    det = build("knn", {"k": 4, "samples_per_class": 5, "seed": 9}).fit(feature_set(bank, labels, "train"))
    np.testing.assert_allclose(det.score(feature_set(queries)), -brute(bank[rows], queries, 4)[0], atol=1e-6)
    # the overlap check sees only the sampled rows ... and a scored image among them fails
    det.score(feature_set(queries[:1], paths=[f"/train/{np.setdiff1d(np.arange(50), rows)[0]}.png"]))
    with pytest.raises(ValueError, match=r"reference bank 'train'"):
        det.score(feature_set(queries[:1], paths=[f"/train/{rows[0]}.png"]))
    with pytest.raises(ValueError, match="knn bank 'train': samples_per_class needs class labels"):
        build("knn", {"k": 1, "samples_per_class": 2}).fit(feature_set(bank, np.full(len(bank), -1), "train"))


def test_knn_settings_errors():
    with pytest.raises(ValueError, match=r"knn_deepdream: backend 'gpu' not in \['auto', 'faiss', 'torch'\]"):
        build("knn_deepdream", {"backend": "gpu"})
    with pytest.raises(ValueError, match="knn_deepinversion: k=5 exceeds the bank size 3 of 'prototypes'"):
        build("knn_deepinversion", {"k": 5}).fit(feature_set(np.eye(3), name="prototypes"))
    with pytest.raises(ValueError, match="samples_per_class must be a positive integer"):
        build("knn", {"samples_per_class": 0})


# --- prototype banks ------------------------------------------------------------------------------------------------

def test_prototype_features_equal_those_of_their_saved_pngs(tmp_path, tiny_checkpoint):
    """`peekflow extract --prototypes` = the prototypes quantised, saved as PNGs and extracted like real images."""
    rng = np.random.default_rng(5)
    images = rng.random((6, 3, 32, 32)).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1, 2])
    protos = tmp_path / "deepinversion.h5"
    write_prototypes(protos, Prototypes(images, targets, np.zeros(6), "deepinversion", "tiny", ["a", "b", "c"]))
    folder = tmp_path / "pngs"
    for i, img in enumerate(as_pil(images)):
        (folder / "abc"[targets[i]]).mkdir(parents=True, exist_ok=True)
        img.save(folder / "abc"[targets[i]] / f"{i}.png")
    common = ["--model", json.dumps(TINY_MODEL), "--checkpoint", tiny_checkpoint,
              "--settings", '{"layers": ["layer3", "layer4"], "batch_size": 4}', "--device", "cpu"]
    bank, real = tmp_path / "prototypes_deepinversion.h5", tmp_path / "pngs.h5"
    assert run_cli("extract", *common, "--prototypes", protos, "--dataset-name", "p", "--out", bank) == 0
    assert run_cli("extract", *common, "--images", folder, "--dataset-name", "pngs", "--out", real) == 0
    a, b = load_feature_set(bank, "layer4"), load_feature_set(real, "layer4")
    order = np.argsort([int(p.rsplit("/", 1)[1][:-4]) for p in b.paths])  # the PNG store is sorted by class folder
    np.testing.assert_allclose(a.features, b.features[order], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.logits, b.logits[order], rtol=1e-5, atol=1e-6)
    assert a.labels.tolist() == targets.tolist() and a.paths == [""] * 6
    assert a.attrs["prototype_method"] == "deepinversion" and a.attrs["dataset"] == "p"

    # a data-free bank for knn_deepinversion through `peekflow score`
    out = tmp_path / "knn_deepinversion.h5"
    assert run_cli("score", "--method", "knn_deepinversion", "--settings", '{"k": 2}', "--layer", "layer4",
                   "--fit-store", bank, "--eval", f"pngs={real}", "--out", out) == 0
    with h5py.File(out) as h5:
        expected = -brute(a.features.astype(np.float64), b.features.astype(np.float64), 2)[0]
        np.testing.assert_allclose(h5["pngs"][:], expected, atol=1e-6)
        assert h5.attrs["fit_store"] == str(bank) and json.loads(h5.attrs["settings"])["k"] == 2

    wrong = ["--model", json.dumps({**TINY_MODEL, "name": "other"}), *common[2:]]
    assert run_cli("extract", *wrong, "--prototypes", protos, "--dataset-name", "p", "--out", tmp_path / "x.h5") == 1


# --- the workflow: k sweep and prototype banks ----------------------------------------------------------------------

def test_k_sweep_and_banks_plan_one_score_job_each(tmp_path):
    from workflow import planned_jobs, planned_outputs, snakemake, tiny_config, write_config

    config = tiny_config()
    config["ood"]["methods"] = {"knn": {"k": [1, 3]}, "knn_deepdream": {"k": 1}, "odin": {}}
    result = snakemake(tmp_path, "-n", "results/ood_table.csv", config=write_config(tmp_path, config))
    assert result.returncode == 0, result.stderr[-2000:]
    jobs, outputs = planned_jobs(result), planned_outputs(result)
    runs = ["knn_k1", "knn_k3", "knn_deepdream", "odin"]
    evaluated = [config["ood"]["id_test"], *config["ood"]["ood_sets"]]
    # one score job per (run, evaluated data set), joined into one score file per run
    assert jobs["score_ood"] == len(runs) * len(evaluated) and jobs["gather_ood_scores"] == len(runs)
    assert jobs["extract_prototype_features"] == 1
    assert sorted(outputs["score_ood"]) == sorted(f"results/ood/tiny_resnet/scores/{run}/{name}.h5"
                                                  for run in runs for name in evaluated)
    assert sorted(outputs["gather_ood_scores"]) == sorted(f"results/ood/tiny_resnet/scores/{run}.h5" for run in runs)
    config["ood"]["methods"] = {"knn_deepinversion": {}}
    config["prototypes"]["methods"].pop("deepinversion")
    result = snakemake(tmp_path, "-n", config=write_config(tmp_path, config))
    assert result.returncode != 0
    assert "ood.methods.knn_deepinversion: fits on deepinversion prototypes" in result.stdout + result.stderr
