"""PEEK's ImageNet OOD table, run for real: `config/imagenet_resnet50.yaml` itself, end to end to
results/ood_table.csv, on a miniature ImageNet in the config's own layout (1,000 wnid folders of seeded random JPEGs
of varied sizes and modes in val/, a part of them in train/, the four OOD folders) and seeded random-weight
torchvision checkpoints under the config's file names. The only other config is OVERLAY, which shrinks sizes and
nothing else: steps, prototypes, batch sizes, threads, bootstrap resamples, KNN's k to the miniature bank, and the
images scored as the ID test set. Every model, layer, preprocessing (224 px), data set name, method and other method
setting is the config's own. Then a dry run has nothing to do.

The fewest images that still take every path the paper config takes: a 1,000-class ResNet-50 whose classes come from
the 1,000 wnid folders of val/ (one image each, listed but never run through a network); an ID test set of 100 val
images of every 10th class (labels are the model's class indices, not 0..99), scored by every method, ODIN's
forward-backward-forward through ResNet-50 at 224 px included; a 110-row training bank of 100 classes (KNN with
k=100; Mahalanobis' covariance of rank 10 of 2,048 dimensions, the rank-deficient warning); 20 DeepInversion
prototypes at 224 px (the data-free bank) and the EfficientNet-B0 probe's checkpoint; four OOD sets in the MOS
tarballs' layout. The run was 1,500 CPU-seconds with 1,000 ID test and 1,100 training images (ODIN alone 770); it is
now about a tenth of that (the `--durations` of a CI run say how long).
Random weights: the table's numbers mean nothing, only that every stage ran and agrees with the stores."""

import math

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import softmax

from workflow import ROOT, fake_user_inputs, snakemake

pytestmark = pytest.mark.slow

CONFIG_FILE = ROOT / "config" / "imagenet_resnet50.yaml"
CONFIG = yaml.safe_load(CONFIG_FILE.read_text())
TARGET = CONFIG["target_model"]
OOD = CONFIG["ood"]
N_CLASSES, EVERY, EXTRA_TRAIN_EVERY, OOD_IMAGES = 1000, 10, 100, 6
ID_TEST_PATH = "resources/imagenet/val_every_10th_class"
# sizes only: the ID test set is the val images of every 10th class; 20 DeepInversion prototypes (classes 0-19) of 2
# steps at the config's 224 px, enough for knn_deepinversion's k=10; k within the 110-row bank; one thread a job (the
# tests run on every core already); 20 bootstrap resamples
OVERLAY = {
    "datasets": {OOD["id_test"]: {"path": ID_TEST_PATH, "images": N_CLASSES // EVERY}},
    "extract": {"batch_size": 50, "num_workers": 0, "threads": 1},
    "prototypes": {"threads": 1, "methods": {"deepinversion": {"per_class": 1, "n": 20, "steps": 2,
                                                               "batch_size": 20}}},
    "ood": {"threads": 1, "methods": {"odin": {"batch_size": 25}, "knn": {"k": 100}}, "table": {"n_bootstrap": 20}},
}
TEXTURES = ["banded", "dotted", "striped"]


def wnids(n: int, seed: int = 0) -> list[str]:
    """n sorted ImageNet-style synset ids (n + 8 digits)."""
    rng = np.random.default_rng(seed)
    return [f"n{i:08d}" for i in sorted(rng.choice(np.arange(1_000_000, 15_000_000), n, replace=False))]


def miniature_imagenet() -> dict[str, dict[str, int]]:
    """The config's tree, per data set path: class folder -> images. val: 1 per class (every class folder names a
    class); the ID test set: the val image of every 10th class; train: 1 for every 10th class, 2 in every 100th (110
    rows of 100 classes: covariance rank 10); the OOD sets: 6 images each, in one `images` folder (as the MOS tarballs
    unpack) or 3 texture folders (DTD)."""
    paths = {name: spec["path"] for name, spec in CONFIG["datasets"].items()}
    classes = wnids(N_CLASSES)
    assert CONFIG["models"][TARGET]["classes_from_folder"] == paths[OOD["id_test"]]
    return {
        paths[OOD["id_test"]]: dict.fromkeys(classes, 1),
        ID_TEST_PATH: dict.fromkeys(classes[::EVERY], 1),
        paths[OOD["id_train"]]: {c: 1 + (i % EXTRA_TRAIN_EVERY == 0) for i, c in enumerate(classes) if i % EVERY == 0},
        **{paths[name]: {"images": OOD_IMAGES} for name in ["inaturalist", "sun", "places"]},
        paths["textures"]: dict.fromkeys(TEXTURES, OOD_IMAGES // len(TEXTURES)),
    }


@pytest.fixture(scope="module")
def imagenet_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("imagenet")
    fake_user_inputs(work, CONFIG, folders=miniature_imagenet(), seed=0)
    overlay = work / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(OVERLAY, sort_keys=False))
    result = run_table(work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def run_table(work, *args: str):
    """`snakemake --configfile <the config> <the overlay> --cores 2 [args] -- results/ood_table.csv` in `work`."""
    return snakemake(work, str(work / "overlay.yaml"), "--cores", "2", *args, "--", "results/ood_table.csv",
                     config=CONFIG_FILE)


def store(run, dataset: str):
    with h5py.File(run / f"results/features/{TARGET}/{dataset}.h5") as h5:
        assert h5.attrs["complete"]
        layer = CONFIG["models"][TARGET]["penultimate"]
        return h5["logits"][:].astype(np.float64), h5[f"features/{layer}"].shape, h5["labels"][:]


def test_table_has_every_method_and_set(imagenet_run):
    run = imagenet_run
    table = pd.read_csv(run / "results/ood_table.csv")
    expected = {(m, o) for m in OOD["methods"] for o in [*OOD["ood_sets"], "average"]}
    assert set(zip(table.method, table.ood_dataset)) == expected and len(table) == len(expected)
    for col in ["auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out"]:
        assert all(0 <= v <= 100 and math.isfinite(v) for v in table[col]), col
    rows = table[table.ood_dataset != "average"]
    assert (rows.n_id == N_CLASSES // EVERY).all() and (rows.n_ood == OOD_IMAGES).all()


def test_stores_hold_the_tree(imagenet_run):
    """The ID test set: the val image of every 10th class in wnid order, labelled with the index of its class among
    the 1,000 folders of val/ (0, 10, ..., 990), 1,000 logits; layer4 average-pooled to 2048 features; train 110
    labelled rows of classes 0, 10, ..., 990 (2 of every 100th); the data-free bank: the 20 prototypes."""
    run = imagenet_run
    logits, shape, labels = store(run, OOD["id_test"])
    n_test = N_CLASSES // EVERY
    assert logits.shape == (n_test, 1000) and shape == (n_test, 2048) and np.isfinite(logits).all()
    np.testing.assert_array_equal(labels, np.arange(0, N_CLASSES, EVERY))
    _, shape, labels = store(run, OOD["id_train"])
    assert shape == (110, 2048) and (labels % EVERY == 0).all() and len(set(labels)) == 100
    assert np.bincount(labels).max() == 2 and (np.bincount(labels) == 2).sum() == 10
    _, shape, labels = store(run, "prototypes_deepinversion")
    assert shape == (20, 2048)
    np.testing.assert_array_equal(labels, np.arange(20))
    for name in OOD["ood_sets"]:
        _, shape, labels = store(run, name)
        assert shape == (OOD_IMAGES, 2048) and (labels == -1).all()


def test_msp_auroc_matches_the_stores(imagenet_run):
    """MSP recomputed from the stored logits and the table's AUROC by brute force, P(id > ood) + P(tie)/2."""
    run = imagenet_run
    with h5py.File(run / f"results/ood/{TARGET}/scores/msp.h5") as h5:
        scores = {name: h5[name][:] for name in [OOD["id_test"], *OOD["ood_sets"]]}
    table = pd.read_csv(run / "results/ood_table.csv").set_index(["method", "ood_dataset"])
    s_id = scores[OOD["id_test"]]
    np.testing.assert_allclose(s_id, softmax(store(run, OOD["id_test"])[0], axis=1).max(1), rtol=1e-6)
    for name in OOD["ood_sets"]:
        s_ood = scores[name]
        auroc = (s_id[:, None] > s_ood).mean() + 0.5 * (s_id[:, None] == s_ood).mean()
        assert table.loc[("msp", name)].auroc == pytest.approx(100 * auroc, abs=0.006)


def test_rank_deficient_mahalanobis_is_reported(imagenet_run):
    run = imagenet_run
    log = (run / f"logs/ood/{TARGET}/scores/mahalanobis/{OOD['id_test']}.log").read_text()
    assert "covariance rank 10 of 2048 feature dimensions (110 rows, 100 classes" in log, log[-2000:]


def test_nothing_to_do_afterwards(imagenet_run):
    result = run_table(imagenet_run, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stdout[-2000:]
