"""The whole workflow through real Snakemake on the tiny config: table, nothing-to-do, exact reruns, config errors."""

import json
import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

from peekflow.ood.table import COLUMNS
from workflow import (ROOT, fake_user_inputs, planned_jobs, planned_outputs, snakemake, snakemake_exe, tiny_config,
                      wordnet_missing, write_config)

# finished_run (tests/conftest.py): the tiny workflow run to completion once per session, shared with test_report.py

N_EVALUATED = 1 + len(tiny_config()["ood"]["ood_sets"])  # data sets each OOD method scores: ID test + OOD sets


def test_table_has_every_method_and_ood_set(finished_run):
    table = pd.read_csv(finished_run / "results" / "ood_table.csv")
    assert list(table.columns) == COLUMNS
    methods = ["msp", "energy", "odin", "mahalanobis", "knn", "knn_deepinversion", "knn_deepdream"]
    ood_sets = ["novel_shapes", "textures", "noise", "average"]
    assert sorted(zip(table.method, table.ood_dataset)) == sorted((m, o) for m in methods for o in ood_sets)
    for col in ["auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out"]:
        assert all(0 <= v <= 100 and math.isfinite(v) for v in table[col]), col
    assert set(table.n_id) == {30}  # 3 classes x 10 val images
    assert "| method" in (finished_run / "results" / "ood_table.md").read_text()
    assert (table.auroc_lo <= table.auroc).all() and (table.auroc <= table.auroc_hi).all()
    assert set(table[table.method == "knn"].k) == {5} and set(table[table.method == "energy"].temperature) == {2.0}
    figures = finished_run / "results" / "ood" / "tiny_resnet" / "figures"
    assert sorted(p.name for p in figures.glob("*.png")) == sorted(f"{m}_{kind}.png" for m in methods
                                                                  for kind in ("roc", "hist"))


def test_prototypes_and_their_quality_reports(finished_run):
    from peekflow.prototypes.store import read_prototypes

    for method in ["deepdream", "deepinversion", "caricature"]:
        protos = read_prototypes(finished_run / "results" / "prototypes" / "tiny_resnet" / f"{method}.h5")
        assert protos.images.shape == (3, 3, 32, 32) and sorted(protos.targets) == [0, 1, 2]
        quality = json.loads((finished_run / "results" / "prototypes" / "tiny_resnet" / f"{method}_quality.json").read_text())
        assert quality["n"] == 3 and 0 <= quality["target_accuracy"] <= 1 and 0 <= quality["probe_accuracy"] <= 1
        assert quality["chance"] == pytest.approx(1 / 3)
        assert (finished_run / "results" / "prototypes" / "tiny_resnet" / f"{method}.png").stat().st_size > 0


def test_probing_names_the_permuted_units(finished_run):
    probing = finished_run / "results" / "probing" / "tiny_resnet" / "tiny_vgg"
    report = json.loads((probing / "probing.json").read_text())
    metrics = json.loads((finished_run / "results" / "models" / "tiny_resnet" / "metrics.json").read_text())
    # class_order_seed 3: the target's units are a derangement of the class folders; the answer key is its classes
    assert metrics["classes"] != sorted(metrics["classes"])
    assert [report["units"][str(u)]["true_class"] for u in range(3)] == metrics["classes"]
    assert report["n_units"] == 3 and 0 <= report["accuracy"] <= 1 and 0 <= report["hungarian_accuracy"] <= 1
    header = (probing / "similarity.csv").read_text().splitlines()[0]
    assert header == "unit,circle,square,triangle"  # known classes: the probe's, in its own order
    assert (probing / "similarity.png").stat().st_size > 0


def test_every_rule_wrote_its_log_and_benchmark(finished_run):
    for rule in ["generate_dataset", "train_model", "extract_features", "score_ood", "gather_ood_scores",
                 "synthesize_prototypes", "synthesize_caricatures", "probe_prototypes", "evaluate_prototypes",
                 "plot_ood", "extract_prototype_features"]:
        assert list((finished_run / "results" / "benchmarks" / rule).rglob("*.tsv")), rule
    # one score job per (method, data set), each with its log
    evaluated = [tiny_config()["ood"]["id_test"], *tiny_config()["ood"]["ood_sets"]]
    logs = finished_run / "logs" / "ood" / "tiny_resnet" / "scores"
    assert sorted(p.relative_to(logs).as_posix() for p in logs.rglob("*/*.log")) == sorted(
        f"{m}/{d}.log" for m in tiny_config()["ood"]["methods"] for d in evaluated)
    assert (finished_run / "logs" / "models" / "tiny_resnet.log").read_text().count("epoch 2") >= 1


def test_emergence_outputs(finished_run):
    out = finished_run / "results" / "emergence" / "tiny_resnet"
    counts = json.loads((out / "knowledge_points.json").read_text())
    assert [row["layer"] for row in counts["layers"]] == ["layer3", "layer4"] and counts["images"] == 12
    assert all(row["regions"] == 12 * 4 for row in counts["layers"])  # 4 per class x 3 classes, 2 x 2 cells
    for name in ["layer3.h5", "layer4.h5", "layer3.png", "layer4.png", "knowledge_points.csv", "knowledge_points.png",
                 "trajectory.h5", "trajectory.png"]:
        assert (out / name).stat().st_size > 0, name
    for rule in ["extract_emergence_maps", "analyse_emergence", "trace_emergence_attack"]:
        assert list((finished_run / "results" / "benchmarks" / rule).rglob("*.tsv")), rule


def test_class_semantics_and_the_judgements_against_wordnet(finished_run):
    """results/semantics/<model>/ holds the classes in unit order with the library's matrices; the probing's
    semantics.json and DORA's dora_wordnet.json equal the library's judgements of the run's own files, and agree with
    what those files say independently (exact accuracy at the deepest depth; DORA's Mantel r is the Pearson
    correlation of the EA and WordNet distances); the summaries and the atlas's fc page show them."""
    if wordnet_missing():
        pytest.skip(f"WordNet 3.0 is not installed: {wordnet_missing()}")
    import numpy as np
    from scipy.stats import pearsonr

    from peekflow.neurons.dora import ea_distance
    from peekflow.neurons.dora_shards import read_signals
    from peekflow.semantics.hierarchy import class_semantics
    from peekflow.semantics.judgements import judge_dora, judge_probing
    from peekflow.semantics.wordnet import class_synsets, open_wordnet

    run, block = finished_run / "results", tiny_config()["semantics"]
    metrics = json.loads((run / "models" / "tiny_resnet" / "metrics.json").read_text())
    table = pd.read_csv(run / "semantics" / "tiny_resnet" / "synsets.csv")
    assert table["class"].tolist() == metrics["classes"]  # unit order: the permuted classes
    assert table["synset"].tolist() == [block["synsets"][c] for c in metrics["classes"]]
    expected = class_semantics(class_synsets(open_wordnet(), metrics["classes"], block["synsets"]))
    np.testing.assert_array_equal(pd.read_csv(run / "semantics" / "tiny_resnet" / "distance.csv",
                                              index_col="class").to_numpy(), expected.distance)
    probe_table = pd.read_csv(run / "semantics" / "tiny_vgg" / "synsets.csv")
    assert probe_table["class"].tolist() == ["circle", "square", "triangle"]

    probing = run / "probing" / "tiny_resnet" / "tiny_vgg"
    report = json.loads((probing / "semantics.json").read_text())
    direct = judge_probing(probing / "similarity.csv", probing / "probing.json",
                           run / "semantics" / "tiny_vgg" / "synsets.csv", block["permutations"], 0)
    assert report == json.loads(json.dumps({**direct, "similarity": report["similarity"],
                                            "synsets": report["synsets"], "settings": report["settings"]}))
    exact = json.loads((probing / "probing.json").read_text())
    assert report["accuracy_by_depth"][0] == 1 and report["accuracy_by_depth"][-1] == exact["accuracy"]
    assert report["hungarian_accuracy_by_depth"][-1] == exact["hungarian_accuracy"]
    assert report["mantel"]["exact"] and report["mantel"]["permutations"] == 6  # 3 units: all 3! relabellings
    assert (probing / "semantics.png").stat().st_size > 0

    fc = run / "neurons" / "tiny_resnet" / "fc"
    dora = json.loads((fc / "dora_wordnet.json").read_text())
    assert dora == json.loads(json.dumps({**judge_dora(fc / "dora_signals.h5", run / "semantics" / "tiny_resnet" /
                                                       "synsets.csv", block["permutations"], 0),
                                          "signals": dora["signals"], "synsets": dora["synsets"],
                                          "settings": dora["settings"]}))
    signals, _ = read_signals(fc / "dora_signals.h5")
    units = signals.neurons[signals.activated]
    assert dora["units"] == units.tolist() and dora["classes"] == [metrics["classes"][u] for u in units]
    upper = np.triu_indices(len(units), 1)
    r = pearsonr(ea_distance(signals.representations[signals.activated])[upper],
                 expected.distance[np.ix_(units, units)][upper]).statistic
    assert dora["mantel_r"] == pytest.approx(r, abs=1e-9)

    summary = pd.read_csv(run.parent / "results" / "semantics_summary.csv").set_index("what")
    assert summary.loc["probing:tiny_vgg", "mantel_r_mean"] == pytest.approx(report["mantel_r"], abs=1e-4)
    assert summary.loc["dora:fc", "mantel_p_mean"] == pytest.approx(dora["mantel_p"], abs=1e-4)
    depths = pd.read_csv(run / "semantic_depths_summary.csv")
    assert depths["depth"].tolist() == report["depths"]
    np.testing.assert_allclose(depths["chance_accuracy_by_depth_mean"], report["chance_accuracy_by_depth"], atol=1e-4)
    page = (run / "atlas" / "tiny_resnet" / "fc" / "index.html").read_text()
    assert f"r = {dora['mantel_r']:.3f}" in page and f"p = {dora['mantel_p']:.3g}" in page
    assert '<a href="fc/index.html">fc</a>' in (run / "atlas" / "tiny_resnet" / "index.html").read_text()


def test_second_dry_run_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_changed_knn_k_reruns_only_knn_and_table(finished_run):
    config = tiny_config()
    config["ood"]["methods"]["knn"]["k"] = 3
    result = snakemake(finished_run, "-n", config=write_config(finished_run, config, "k3.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    # one score job per evaluated data set (the ID test set and each OOD set), of knn only
    assert planned_jobs(result) == {"score_ood": N_EVALUATED, "gather_ood_scores": 1, "plot_ood": 1,
                                    "make_ood_table": 1, "summarise_ood": 1}
    assert set(re.findall(r"method=(\w+)", result.stdout)) == {"knn"}


def test_changed_deepinversion_setting_reruns_only_its_prototypes_bank_and_tables(finished_run):
    config = tiny_config()
    config["prototypes"]["methods"]["deepinversion"]["steps"] = 6
    result = snakemake(finished_run, "-n", config=write_config(finished_run, config, "di6.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert planned_jobs(result) == {"synthesize_prototypes": 1, "evaluate_prototypes": 1,
                                    "extract_prototype_features": 1, "score_ood": N_EVALUATED,
                                    "gather_ood_scores": 1, "plot_ood": 1, "make_ood_table": 1,
                                    "summarise_ood": 1, "summarise_prototypes": 1}
    assert "proto=deepinversion" in result.stdout and "proto=deepdream" not in result.stdout
    assert set(re.findall(r"method=(\w+)", result.stdout)) == {"knn_deepinversion"}


def test_added_ood_set_extracts_and_scores_only_that_set(finished_run):
    config = tiny_config()
    # a new generated set: generate.<set> settings are per set, so no other set's images change
    config["generate"]["sets"]["blobs"] = {"kind": "noise", "splits": {"ood": 6}}
    config["datasets"]["blobs"] = {"generated": "blobs", "split": "ood"}
    config["ood"]["ood_sets"].append("blobs")
    result = snakemake(finished_run, "-n", config=write_config(finished_run, config, "blobs.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    methods = list(config["ood"]["methods"])
    assert planned_jobs(result) == {"generate_dataset": 1, "extract_features": 1, "score_ood": len(methods),
                                    "gather_ood_scores": len(methods), "plot_ood": len(methods),
                                    "make_ood_table": 1, "summarise_ood": 1}
    outputs = planned_outputs(result)
    assert outputs["generate_dataset"] == ["resources/datasets/blobs/attributes.csv"]
    assert outputs["extract_features"] == ["results/features/tiny_resnet/blobs.h5"]  # the target's only
    assert sorted(outputs["score_ood"]) == sorted(f"results/ood/tiny_resnet/scores/{m}/blobs.h5" for m in methods)


def test_sharding_an_extracted_set_reruns_it_and_its_consumers_unless_its_metadata_is_wiped(finished_run, tmp_path):
    config = tiny_config()
    config["extract"]["shards"] = {"shapes_train": 3}  # planned only (at run time S may not exceed its 1 batch)
    sharded = write_config(finished_run, config, "sharded.yaml")
    result = snakemake(finished_run, "-n", config=sharded)
    assert result.returncode == 0, result.stderr[-2000:]
    # another rule makes the store now (other code, inputs and params): its shards and merge, then what reads it --
    # the fitted OOD methods (mahalanobis, knn) on every evaluated set, the top-N images and patches per layer, VITAL
    # (its references are the patches), and the atlas built from them
    assert planned_jobs(result) == {"extract_feature_shard": 3, "merge_feature_shards": 1,
                                    "score_ood": 2 * N_EVALUATED, "gather_ood_scores": 2, "plot_ood": 2,
                                    "make_ood_table": 1, "summarise_ood": 1, "rank_top_images": 2,
                                    "extract_patches": 2, "run_vital": 1, "build_atlas": 1}
    assert set(re.findall(r"method=(\w+)", result.stdout)) == {"mahalanobis", "knn"}
    # the merged store would equal the existing one bit for bit: wiping its provenance keeps it (docs/real-data.md)
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, symlinks=True)
    store = "results/features/tiny_resnet/shapes_train.h5"
    assert snakemake(copy, "--cleanup-metadata", store, config=sharded).returncode == 0
    for cfg in (sharded, finished_run / "config.yaml"):
        result = snakemake(copy, "-n", config=cfg)
        assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "key, value, jobs",
    [("plots", {"bins": 7}, {"plot_ood": len(tiny_config()["ood"]["methods"])}),
     ("table", {"n_bootstrap": 10, "seed": 1}, {"make_ood_table": 1, "summarise_ood": 1})],
)
def test_changed_table_or_plot_setting_reruns_only_its_rule(finished_run, key, value, jobs):
    config = tiny_config()
    config["ood"][key] = value
    result = snakemake(finished_run, "-n", config=write_config(finished_run, config, f"{key}.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert planned_jobs(result) == jobs


def test_changed_generation_seed_reruns_everything_downstream(finished_run):
    config = tiny_config()
    config["generate"]["seed"] = 8
    jobs = planned_jobs(snakemake(finished_run, "-n", config=write_config(finished_run, config, "seed8.yaml")))
    # 5 stores of the target (id train, id test, 3 OOD sets) + the probe's store of the probing search space
    assert jobs["generate_dataset"] == 4 and jobs["train_model"] == 2 and jobs["extract_features"] == 6


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["ood"].__setitem__("k_nn", 3), "ood.k_nn: unknown key"),
        (lambda c: c["emergence"].__setitem__("gird", 3), "emergence.gird: unknown key (did you mean grid?)"),
        (lambda c: c["models"]["tiny_resnet"].pop("penultimate"),
         "models.tiny_resnet: 'penultimate' is a required property"),
        (lambda c: c["ood"].__setitem__("ood_sets", ["textures", "svhn"]),
         "ood.ood_sets: names 'svhn', which is not defined in datasets"),
        (lambda c: c["ood"]["methods"].__setitem__("mahalanobiss", {}),
         "ood.methods.mahalanobiss: unknown OOD method (did you mean mahalanobis?)"),
        (lambda c: c.__setitem__("target_model", "resnet"), "target_model: names 'resnet'"),
        (lambda c: c["models"]["tiny_resnet"].__setitem__("penultimate", "fc"),
         "models.tiny_resnet.penultimate: 'fc' must be one of its layers"),
        (lambda c: c["emergence"].__setitem__("grid", 3), "emergence.grid: 3 does not fit the maps"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, edit, message):
    config = tiny_config()
    edit(config)
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "--cores", "1")
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_lint_has_only_the_documented_waiver():
    out = subprocess.run([snakemake_exe(), "--lint"], cwd=ROOT, capture_output=True, text=True)
    text = out.stdout + out.stderr
    # a crashed lint prints neither its summary line nor any lint: it must have run to its end (exit 1 with lints)
    assert re.search(r"^(Lints for |Congratulations)", text, re.MULTILINE), text[-2000:]
    assert out.returncode == (0 if "Congratulations" in text else 1), text[-2000:]
    lints = {line.strip() for line in text.splitlines() if line.startswith("    * ")}
    assert lints <= {"* Specify a conda environment or container for each rule.:"}, lints


def test_imagenet_config_dry_runs_on_a_fake_tree(tmp_path):
    """PEEK's ImageNet table (ImageNet val vs iNaturalist, SUN, Places, Textures; MSP, Energy, ODIN, Mahalanobis,
    KNN, KNN on DeepInversion prototypes, and bn_fisher with no image) plans every job once its documented
    resources/imagenet/ tree exists (no images are read in a dry run; the checks before any job load the stand-in
    checkpoints)."""
    import yaml

    config_file = ROOT / "config" / "imagenet_resnet50.yaml"
    config = yaml.safe_load(config_file.read_text())
    for spec in config["datasets"].values():
        assert spec["path"].startswith("resources/imagenet/")
    fake_user_inputs(tmp_path, config)  # folders with an (empty) image, checkpoints of the right shapes
    ood = config["ood"]
    assert ood["id_test"] == "imagenet_val" and ood["ood_sets"] == ["inaturalist", "sun", "places", "textures"]
    methods = ["msp", "energy", "odin", "mahalanobis", "knn", "knn_deepinversion", "bn_fisher"]
    assert list(ood["methods"]) == methods
    # PEEK's KNN rows: k 1, 5, 50 on both banks, and Sun et al.'s k=1000: 12 runs
    assert ood["methods"]["knn"]["k"] == [1, 5, 50, 1000] and ood["methods"]["knn_deepinversion"]["k"] == [1, 5, 50]
    result = snakemake(tmp_path, "-n", config=config_file)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = planned_jobs(result)
    rules = ["score_ood", "gather_ood_scores", "make_ood_table", "plot_ood", "compare_with_papers"]
    assert {rule: jobs.get(rule) for rule in rules} == {
        "score_ood": 12 * 5, "gather_ood_scores": 12, "make_ood_table": 1, "plot_ood": 12, "compare_with_papers": 1}
    assert jobs["extract_features"] >= 6 and jobs["synthesize_prototypes"] >= 1, jobs
