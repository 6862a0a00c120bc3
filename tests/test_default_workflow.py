"""The embedded default end to end, as a user runs it (`snakemake --cores 8`, rule all).

A trained model differs between processors (CPU kernels round differently), so these tests assert what holds for
every correct run -- structure, completeness, finiteness, agreement of the stored scores and metrics with an
independent computation from the feature stores -- and, beyond that, only properties whose margin was measured over
five training seeds of the target (the stand-in for other processors; the per-seed values are in the comments and in
docs/results.md). How well each method does on the embedded default is a measured result (docs/results.md), not
a test."""

import json
import math

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import logsumexp, softmax

from workflow import ROOT, snakemake

pytestmark = pytest.mark.slow

CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
TARGET = CONFIG["target_model"]
SETS = [CONFIG["ood"]["id_test"], *CONFIG["ood"]["ood_sets"]]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("default")
    result = snakemake(work, "--cores", "8", config=ROOT / "config" / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def stored_scores(run, method: str) -> dict[str, np.ndarray]:
    with h5py.File(run / f"results/ood/{TARGET}/scores/{method}.h5") as h5:
        assert h5.attrs["complete"] and h5.attrs["higher_is_id"]
        return {name: h5[name][:] for name in SETS}


def stored_settings(run, method: str) -> dict:
    """The method's settings as it ran them (defaults filled in)."""
    with h5py.File(run / f"results/ood/{TARGET}/scores/{method}.h5") as h5:
        return json.loads(h5.attrs["settings"])


def store(run, dataset: str, layer: str | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    with h5py.File(run / f"results/features/{TARGET}/{dataset}.h5") as h5:
        assert h5.attrs["complete"]
        return (h5["logits"][:].astype(np.float64), h5[f"features/{layer}"][:].astype(np.float64) if layer else None,
                h5["labels"][:])


def auroc_fpr95(s_id: np.ndarray, s_ood: np.ndarray) -> tuple[float, float]:
    """Brute force from the definitions (metrics.py): P(id > ood) + P(tie)/2; OOD accepted at the highest threshold
    that keeps 95% of ID."""
    greater = (s_id[:, None] > s_ood[None, :]).mean() + 0.5 * (s_id[:, None] == s_ood[None, :]).mean()
    t = np.sort(s_id)[::-1][math.ceil(0.95 * len(s_id)) - 1]
    return 100 * greater, 100 * np.mean(s_ood >= t)


def test_target_model_reaches_95_percent(default_run):
    # training seeds 1-5 of the target: val accuracy 0.992, 0.988, 0.984, 0.989, 0.984
    metrics = json.loads((default_run / f"results/models/{TARGET}/metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.95, metrics["history"]


def test_table_complete_and_finite(default_run):
    table = pd.read_csv(default_run / "results/ood_table.csv")
    groups = [f"average_{g}" for g in CONFIG["ood"].get("groups", {})]
    expected = {(m, o) for m in CONFIG["ood"]["methods"] for o in [*CONFIG["ood"]["ood_sets"], *groups, "average"]}
    assert set(zip(table.method, table.ood_dataset)) == expected and len(table) == len(expected)
    for col in ["auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out"]:
        assert all(0 <= v <= 100 and math.isfinite(v) for v in table[col]), col
    for col in ["auroc", "fpr95"]:  # the bootstrap interval holds the point estimate
        assert (table[f"{col}_lo"] <= table[col] + 1e-9).all() and (table[col] <= table[f"{col}_hi"] + 1e-9).all()


def test_table_matches_the_score_files(default_run):
    """Every row's AUROC and FPR95 recomputed by brute force from the stored scores; averages (overall and per
    group) are means of the rows."""
    table = pd.read_csv(default_run / "results/ood_table.csv").set_index(["method", "ood_dataset"])
    id_test = CONFIG["ood"]["id_test"]
    for method in CONFIG["ood"]["methods"]:
        scores = stored_scores(default_run, method)
        for name in CONFIG["ood"]["ood_sets"]:
            auroc, fpr95 = auroc_fpr95(scores[id_test], scores[name])
            row = table.loc[(method, name)]
            # the table rounds to 2 decimals
            assert row.auroc == pytest.approx(auroc, abs=0.006) and row.fpr95 == pytest.approx(fpr95, abs=0.006)
            assert row.n_id == len(scores[id_test]) and row.n_ood == len(scores[name])
        per_set = table.loc[method].loc[CONFIG["ood"]["ood_sets"]]
        assert table.loc[(method, "average")].auroc == pytest.approx(per_set.auroc.mean(), abs=0.011)
        for group, names in CONFIG["ood"].get("groups", {}).items():
            mean = per_set.loc[names].auroc.mean()
            assert table.loc[(method, f"average_{group}")].auroc == pytest.approx(mean, abs=0.011)


def test_scores_match_an_independent_computation(default_run):
    """MSP, Energy and KNN scores recomputed in float64 numpy from the feature stores (KNN by exhaustive distances)."""
    layer = CONFIG["models"][TARGET]["penultimate"]
    _, bank, _ = store(default_run, CONFIG["ood"]["id_train"], layer)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    k, t = stored_settings(default_run, "knn")["k"], stored_settings(default_run, "energy")["temperature"]
    msp, energy, knn = (stored_scores(default_run, m) for m in ("msp", "energy", "knn"))
    for name in SETS:
        logits, feats, _ = store(default_run, name, layer)
        np.testing.assert_allclose(msp[name], softmax(logits, axis=1).max(1), rtol=1e-6)
        np.testing.assert_allclose(energy[name], t * logsumexp(logits / t, axis=1), rtol=1e-6)
        q = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        d2 = np.maximum((q**2).sum(1)[:, None] + (bank**2).sum(1)[None, :] - 2 * q @ bank.T, 0)
        kth = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
        np.testing.assert_allclose(knn[name], -kth, atol=1e-5)


def test_knn_beats_msp_on_average(default_run):
    # average AUROC, KNN minus MSP, training seeds 1-5 here: +29.4, +23.3, +26.7, +38.8, +31.6 points; on another
    # processor (issue 12) seeds 1-4: +36.0, +21.2, +33.7, +26.6
    auroc = pd.read_csv(default_run / "results/ood_table.csv").set_index(["method", "ood_dataset"]).auroc
    assert auroc["knn", "average"] > auroc["msp", "average"] + 10, auroc


def test_prototypes_carry_their_class(default_run):
    # target accuracy, training seeds 1-3 on this machine: DeepDream 1.0, 0.95, 0.9; DeepInversion on the Fourier
    # parameterisation (the default since issue 18) 1.0, 0.9, 0.9 (on pixels it was 1.0 for seeds 1-5 elsewhere).
    # Transfer to the probe is a measured result (docs/results.md), not a bar: DeepDream 0.45-0.525, DeepInversion
    # 0.25-0.475 (on pixels 0.10-0.35).
    for method in ["deepdream", "deepinversion"]:
        quality = json.loads((default_run / f"results/prototypes/{TARGET}/{method}_quality.json").read_text())
        assert quality["n"] == 40 and 0 <= quality["probe_accuracy"] <= 1, quality
        assert quality["target_accuracy"] >= 0.85, quality


def test_probing_names_the_permuted_units(default_run):
    metrics = json.loads((default_run / f"results/models/{TARGET}/metrics.json").read_text())
    assert metrics["classes"] != sorted(metrics["classes"])  # class_order_seed: units are not in folder order
    report = json.loads((default_run / f"results/probing/{TARGET}/shapes_vgg/probing.json").read_text())
    # training seeds 1-5: accuracy 0.9, 0.9, 0.9, 1.0, 1.0; Hungarian 1.0 each (chance 0.1); 0.9 on another processor
    assert report["accuracy"] >= 0.5 and report["hungarian_accuracy"] >= 0.7, report


def test_class_semantics_and_the_judgements_against_wordnet(default_run):
    """The shapes mapped to WordNet as the config says, in unit order; probing and DORA's ten output units judged
    against WordNet with 999 seeded relabellings (10! are more); the values themselves are measured results
    (docs/results.md, over three seeds), not bars."""
    metrics = json.loads((default_run / f"results/models/{TARGET}/metrics.json").read_text())
    table = pd.read_csv(default_run / f"results/semantics/{TARGET}/synsets.csv")
    assert table["class"].tolist() == metrics["classes"]
    assert table["synset"].tolist() == [CONFIG["semantics"]["synsets"][c] for c in metrics["classes"]]
    probing = json.loads((default_run / f"results/probing/{TARGET}/shapes_vgg/semantics.json").read_text())
    dora = json.loads((default_run / f"results/neurons/{TARGET}/fc/dora_wordnet.json").read_text())
    for report, n in [(probing, 10), (dora, len(dora["units"]))]:
        mantel = report["mantel"]
        assert (mantel["permutations"], mantel["exact"], mantel["n"]) == (999, False, n) and 3 <= n <= 10, mantel
        assert -1 <= mantel["r"] <= 1 and 1 / 1000 <= mantel["p"] <= 1, mantel
    assert probing["accuracy_by_depth"][0] == 1 and probing["accuracy_by_depth"][-1] == probing["accuracy"]
    assert probing["chance_accuracy_by_depth"][-1] == pytest.approx(0.1)  # exact naming by chance: 1 in 10
    page = (default_run / f"results/atlas/{TARGET}/fc/index.html").read_text()
    assert f"r = {dora['mantel_r']:.3f}" in page


def test_knowledge_points_grow_from_first_to_last_layer(default_run):
    # training seeds 1-5: first layer 0 each, last layer 759, 696, 683, 688, 722 knowledge points
    curve = pd.read_csv(default_run / f"results/emergence/{TARGET}/knowledge_points.csv")
    assert curve.knowledge_points.iloc[-1] > curve.knowledge_points.iloc[0], curve


def test_nothing_to_do_afterwards(default_run):
    result = snakemake(default_run, "-n", config=ROOT / "config" / "config.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr
