"""PEEK's ImageNet OOD table and OpenOOD v1.5's ImageNet-1K benchmark, run for real: `config/imagenet_resnet50.yaml`
and `config/openood_imagenet.yaml` themselves, end to end to results/ood_table.csv and results/paper_comparison.csv,
on a miniature ImageNet in the configs' own layout (1,000 wnid folders of seeded random JPEGs of varied sizes and modes
in val/, a part of them in train/, the OOD folders) and seeded random-weight torchvision checkpoints under the
configs' file names. The only other config is an overlay that shrinks sizes and nothing else: steps, prototypes,
batch sizes, threads, bootstrap resamples, bn_fisher's draws, KNN's k and ViM's dim to the miniature bank, and the
images scored as the ID test set. Every model, layer, preprocessing (224 px), data set name, method and other method
setting is the configs' own. Then a dry run has nothing to do.

The fewest images that still take every path the paper config takes: a 1,000-class ResNet-50 whose classes come from
the 1,000 wnid folders of val/ (one image each, listed but never run through a network); an ID test set of 100 val
images of every 10th class (labels are the model's class indices, not 0..99), scored by every method, ODIN's
forward-backward-forward through ResNet-50 at 224 px included; a 110-row training bank of 100 classes (KNN with k up
to 100; Mahalanobis' covariance of rank 10 of 2,048 dimensions, the rank-deficient warning); 20 DeepInversion
prototypes at 224 px (the data-free bank) and the EfficientNet-B0 probe's checkpoint; four OOD sets in the MOS
tarballs' layout, five in OpenOOD's. With 1,000 ID test and 1,100 training images the PEEK run took 1,500
CPU-seconds (ODIN alone 770), now about a fifth of that (a CI run's `--durations` say how long).
Random weights: the tables' numbers mean nothing, only that every stage ran and agrees with the stores."""

import math
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import softmax

from peekflow.workflow.config_checks import ood_runs
from workflow import ROOT, fake_user_inputs, imagenet_wnids, planned_jobs, snakemake, wordnet_missing, write_images

pytestmark = pytest.mark.slow

CONFIG_FILE = ROOT / "config" / "imagenet_resnet50.yaml"
CONFIG = yaml.safe_load(CONFIG_FILE.read_text())
TARGET = CONFIG["target_model"]
OOD = CONFIG["ood"]
N_CLASSES, EVERY, EXTRA_TRAIN_EVERY, OOD_IMAGES = 1000, 10, 100, 6
ID_TEST_PATH = "resources/imagenet/val_every_10th_class"
# sizes only: the ID test set is the val images of every 10th class; 20 DeepInversion prototypes (classes 0-19) of 2
# steps at the config's 224 px; KNN's k within the 110-row bank (1000 -> 100) and the 20 prototypes (50 -> 10: PEEK's
# k=50 row of that bank stays "not in the run"); bn_fisher's draws 50,000 -> 5,000 (each of its five score jobs drew
# 50,000 2048-d features: 20 CPU-s); one thread a job (the tests run on every core already); 20 bootstrap resamples
OVERLAY = {
    "datasets": {OOD["id_test"]: {"path": ID_TEST_PATH, "images": N_CLASSES // EVERY}},
    "extract": {"batch_size": 50, "num_workers": 0, "threads": 1},
    "prototypes": {"threads": 1, "methods": {"deepinversion": {"per_class": 1, "n": 20, "steps": 2,
                                                               "batch_size": 20}}},
    "ood": {"threads": 1, "methods": {"odin": {"batch_size": 25}, "knn": {"k": [1, 5, 50, 100]},
                                      "knn_deepinversion": {"k": [1, 5, 10]}, "bn_fisher": {"samples": 5000}},
            "table": {"n_bootstrap": 20}},
}
RUNS = ood_runs({"ood": {**OOD, "methods": {**OOD["methods"], **OVERLAY["ood"]["methods"]}}})
TARGETS = ["results/ood_table.csv", "results/paper_comparison.csv"]
# the class semantics of the target: its 1,000 classes (the wnid folders of val/) mapped to WordNet 3.0 synsets
SEMANTICS = [f"results/semantics/{TARGET}/{name}" for name in ("synsets.csv", "distance.csv", "wup.csv",
                                                                 "lcs_depth.csv", "matrices.png")]
TEXTURES = ["banded", "dotted", "striped"]


def wnids(n: int, seed: int = 0) -> list[str]:
    """n sorted ImageNet-style synset ids (n + 8 digits), most of them no WordNet noun offset (the OOD folders of
    SSB-hard; the classes are ImageNet's own wnids)."""
    rng = np.random.default_rng(seed)
    return [f"n{i:08d}" for i in sorted(rng.choice(np.arange(1_000_000, 15_000_000), n, replace=False))]


def miniature_imagenet() -> dict[str, dict[str, int]]:
    """The config's tree, per data set path: class folder -> images. val: 1 per class (every class folder names a
    class: ImageNet-1k's 1,000 wnids, which the class semantics map to WordNet 3.0); the ID test set: the val image
    of every 10th class; train: 1 for every 10th class, 2 in every 100th (110
    rows of 100 classes: covariance rank 10); the OOD sets: 6 images each, in one `images` folder (as the MOS tarballs
    unpack) or 3 texture folders (DTD)."""
    paths = {name: spec["path"] for name, spec in CONFIG["datasets"].items()}
    classes = imagenet_wnids(N_CLASSES)
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
    if wordnet_missing():
        pytest.skip(f"the config's class semantics need WordNet 3.0: {wordnet_missing()}")
    result = run_table(work, targets=[*TARGETS, *SEMANTICS])
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def run_table(work, *args: str, config=CONFIG_FILE, targets=TARGETS):
    """`snakemake --configfile <the config> <the overlay> --cores 2 [args] -- <the table and comparison>` in `work`."""
    return snakemake(work, str(work / "overlay.yaml"), "--cores", "2", *args, "--", *targets, config=config)


def store(run, dataset: str):
    with h5py.File(run / f"results/features/{TARGET}/{dataset}.h5") as h5:
        assert h5.attrs["complete"]
        layer = CONFIG["models"][TARGET]["penultimate"]
        return h5["logits"][:].astype(np.float64), h5[f"features/{layer}"].shape, h5["labels"][:]


def test_table_has_every_method_and_set(imagenet_run):
    run = imagenet_run
    table = pd.read_csv(run / "results/ood_table.csv")
    expected = {(m, o) for m in RUNS for o in [*OOD["ood_sets"], "average"]}
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


def test_peeks_table_is_set_beside_the_run(imagenet_run):
    """Every value of PEEK's published table is in results/paper_comparison.csv: beside the run's value for the same
    method, settings and data set (the table's, the difference, inside the CI or not), or as not in the run (KNN on
    the prototypes at k=50, which the miniature's 20-prototype bank cannot take); the run's bn_fisher and k=100 KNN
    rows are listed as not in the paper."""
    from peekflow.ood.papers import load_paper

    comparison = pd.read_csv(imagenet_run / "results/paper_comparison.csv")
    table = pd.read_csv(imagenet_run / "results/ood_table.csv").set_index(["method", "ood_dataset"])
    paper = load_paper("peek_imagenet_resnet50")
    published = sum(len(values) for row in paper["rows"] for values in row["sets"].values())
    assert published == 4 * 10 + 6 * 2
    compared = comparison[comparison.status == "compared"]
    missing = comparison[comparison.status == "not in the run"]
    assert len(compared) + len(missing) == published and len(missing) == 2
    assert set(missing.published_method) == {"knn_deepinversion"} and set(missing.published_settings) == {"k=50"}
    for r in compared.itertuples():
        row = table.loc[(r.method, r.ood_dataset)]
        assert r.run == row[r.metric] and r.difference == pytest.approx(row[r.metric] - r.published, abs=0.011)
        assert r.inside_ci == (row[f"{r.metric}_lo"] <= r.published <= row[f"{r.metric}_hi"])
    assert {("knn_k1", "k=1"), ("knn_k50", "k=50"), ("knn_deepinversion_k5", "k=5")} <= set(
        zip(compared.method, compared.published_settings))
    lacking = comparison[comparison.status == "not in the paper"]
    assert {"bn_fisher", "knn_k100", "knn_deepinversion_k10"} <= set(lacking.method)
    assert "## PEEK" in (imagenet_run / "results/paper_comparison.md").read_text()


def test_rank_deficient_mahalanobis_is_reported(imagenet_run):
    run = imagenet_run
    log = (run / f"logs/ood/{TARGET}/scores/mahalanobis/{OOD['id_test']}.log").read_text()
    assert "covariance rank 10 of 2048 feature dimensions (110 rows, 100 classes" in log, log[-2000:]


def test_class_semantics_come_from_the_wnid_folders(imagenet_run):
    """results/semantics/resnet50/: the 1,000 classes in the model's (sorted folder) order, each the WordNet 3.0 noun
    synset its wnid names, and the matrices of the library on those synsets."""
    from peekflow.semantics.hierarchy import class_semantics
    from peekflow.semantics.wordnet import class_synsets, open_wordnet

    out = imagenet_run / "results" / "semantics" / TARGET
    table = pd.read_csv(out / "synsets.csv")
    assert table["class"].tolist() == table["wnid"].tolist() == imagenet_wnids()
    assert table["synset"][0] == "tench.n.01" and (out / "matrices.png").stat().st_size > 0
    expected = class_semantics(class_synsets(open_wordnet(), imagenet_wnids()))
    assert table["synset"].tolist() == expected.synsets
    distance = pd.read_csv(out / "distance.csv", index_col="class")
    assert distance.index.tolist() == distance.columns.tolist() == imagenet_wnids()
    np.testing.assert_array_equal(distance.to_numpy(), expected.distance)
    np.testing.assert_allclose(pd.read_csv(out / "wup.csv", index_col="class").to_numpy(), expected.wup, rtol=1e-5)
    np.testing.assert_array_equal(pd.read_csv(out / "lcs_depth.csv", index_col="class").to_numpy(), expected.lcs_depth)


def test_nothing_to_do_afterwards(imagenet_run):
    result = run_table(imagenet_run, "-n", targets=[*TARGETS, *SEMANTICS])
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stdout[-2000:]


# OpenOOD v1.5's ImageNet-1K protocol (config/openood_imagenet.yaml) on the same miniature: its five OOD sets in its
# layout, the ImageNet stores of the PEEK run above reused (same model, data set names and folders); sizes only as
# above (ViM's principal space within the 110-row bank: dim 256 -> 50)
OPENOOD_FILE = ROOT / "config" / "openood_imagenet.yaml"
OPENOOD = yaml.safe_load(OPENOOD_FILE.read_text())
OPENOOD_OVERLAY = {"datasets": OVERLAY["datasets"], "extract": OVERLAY["extract"],
                   "ood": {"threads": 1, "methods": {"odin": {"batch_size": 25}, "vim": {"dim": 50}},
                           "table": {"n_bootstrap": 20}}}
OPENOOD_RUNS = ood_runs({"ood": {**OPENOOD["ood"], "methods": {**OPENOOD["ood"]["methods"],
                                                               **OPENOOD_OVERLAY["ood"]["methods"]}}})


def openood_tree() -> dict[str, dict[str, int]]:
    """OpenOOD's OOD folders: class folders (SSB-hard's wnids, NINCO's and the DTD textures' names) or one `images`
    folder; 6 images each."""
    paths = {name: OPENOOD["datasets"][name]["path"] for name in OPENOOD["ood"]["ood_sets"]}
    return {paths["ssb_hard"]: dict.fromkeys(wnids(2, seed=1), 3), paths["ninco"]: dict.fromkeys(["a", "b", "c"], 2),
            paths["inaturalist"]: {"images": OOD_IMAGES}, paths["textures"]: dict.fromkeys(TEXTURES, 2),
            paths["openimage_o"]: {"images": OOD_IMAGES}}


@pytest.fixture(scope="module")
def openood_run(imagenet_run, tmp_path_factory):
    work = tmp_path_factory.mktemp("openood")
    shutil.copytree(imagenet_run, work, symlinks=True, dirs_exist_ok=True)  # copy2: times kept, nothing looks stale
    write_images(work, openood_tree(), seed=1)
    (work / "overlay.yaml").write_text(yaml.safe_dump(OPENOOD_OVERLAY, sort_keys=False))
    result = run_table(work, config=OPENOOD_FILE)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result


def test_openood_protocol_reuses_the_imagenet_stores_and_reports_near_and_far(openood_run):
    work, result = openood_run
    assert planned_jobs(result)["extract_features"] == 5  # its five OOD sets; ImageNet train and val were reused
    table = pd.read_csv(work / "results/ood_table.csv")
    groups = OPENOOD["ood"]["groups"]
    expected = {(m, o) for m in OPENOOD_RUNS for o in [*OPENOOD["ood"]["ood_sets"], "average_near", "average_far",
                                                       "average"]}
    assert set(zip(table.method, table.ood_dataset)) == expected and len(table) == len(expected)
    rows = table.set_index(["method", "ood_dataset"])
    for method in OPENOOD_RUNS:
        for group, names in groups.items():  # a group's row is the mean of its sets' rows
            mean = np.mean([rows.loc[(method, n)].auroc for n in names])
            assert rows.loc[(method, f"average_{group}")].auroc == pytest.approx(mean, abs=0.011)


def test_openood_near_and_far_are_set_beside_the_published_ones(openood_run):
    from peekflow.ood.papers import load_paper

    work, _ = openood_run
    comparison = pd.read_csv(work / "results/paper_comparison.csv")
    table = pd.read_csv(work / "results/ood_table.csv").set_index(["method", "ood_dataset"])
    paper = load_paper("openood_v15_imagenet_resnet50")
    assert {row["method"] for row in paper["rows"]} == set(OPENOOD_RUNS)  # every OpenOOD method the config runs
    compared = comparison[comparison.status == "compared"]
    assert len(compared) == 2 * len(paper["rows"]) and set(compared.metric) == {"auroc"}
    assert set(compared.ood_dataset) == {"average_near", "average_far"}
    for r in compared.itertuples():
        assert r.run == table.loc[(r.method, r.ood_dataset)].auroc
    assert not (comparison.status == "not in the run").any()
    lacking = comparison[comparison.status == "not in the paper"]  # per-set and overall rows: OpenOOD gives none
    assert len(lacking) == len(OPENOOD_RUNS) * (len(OPENOOD["ood"]["ood_sets"]) + 1)
