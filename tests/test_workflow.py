"""The whole workflow through real Snakemake on the tiny config: table, nothing-to-do, exact reruns, config errors."""

import json
import math
import subprocess

import pandas as pd
import pytest

from peekflow.ood.table import COLUMNS
from workflow import ROOT, planned_jobs, snakemake, snakemake_exe, tiny_config, write_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    write_config(work, tiny_config())
    result = snakemake(work, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def test_table_has_every_method_and_ood_set(finished_run):
    table = pd.read_csv(finished_run / "results" / "ood_table.csv")
    assert list(table.columns) == COLUMNS
    methods, ood_sets = ["msp", "energy", "knn"], ["novel_shapes", "textures", "noise", "average"]
    assert sorted(zip(table.method, table.ood_dataset)) == sorted((m, o) for m in methods for o in ood_sets)
    for col in ["auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out"]:
        assert all(0 <= v <= 100 and math.isfinite(v) for v in table[col]), col
    assert set(table.n_id) == {30}  # 3 classes x 10 val images
    assert "| method" in (finished_run / "results" / "ood_table.md").read_text()


def test_prototypes_and_their_quality_reports(finished_run):
    from peekflow.prototypes.store import read_prototypes

    for method in ["deepdream", "deepinversion"]:
        protos = read_prototypes(finished_run / "results" / "prototypes" / "tiny_resnet" / f"{method}.h5")
        assert protos.images.shape == (3, 3, 32, 32) and sorted(protos.targets) == [0, 1, 2]
        quality = json.loads((finished_run / "results" / "prototypes" / "tiny_resnet" / f"{method}_quality.json").read_text())
        assert quality["n"] == 3 and 0 <= quality["target_accuracy"] <= 1 and 0 <= quality["probe_accuracy"] <= 1
        assert quality["chance"] == pytest.approx(1 / 3)
        assert (finished_run / "results" / "prototypes" / "tiny_resnet" / f"{method}.png").stat().st_size > 0


def test_every_rule_wrote_its_log_and_benchmark(finished_run):
    for rule in ["generate_dataset", "train_model", "extract_features", "score_ood", "synthesize_prototypes",
                 "evaluate_prototypes"]:
        assert list((finished_run / "results" / "benchmarks" / rule).rglob("*.tsv")), rule
    assert (finished_run / "logs" / "models" / "tiny_resnet.log").read_text().count("epoch 2") >= 1


def test_second_dry_run_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_changed_knn_k_reruns_only_knn_and_table(finished_run):
    config = tiny_config()
    config["ood"]["methods"]["knn"]["k"] = 3
    result = snakemake(finished_run, "-n", config=write_config(finished_run, config, "k3.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert planned_jobs(result) == {"make_ood_table": 1, "score_ood": 1}
    assert "method=knn" in result.stdout and "method=msp" not in result.stdout


def test_changed_generation_seed_reruns_everything_downstream(finished_run):
    config = tiny_config()
    config["generate"]["seed"] = 8
    jobs = planned_jobs(snakemake(finished_run, "-n", config=write_config(finished_run, config, "seed8.yaml")))
    assert jobs["generate_dataset"] == 4 and jobs["train_model"] == 2 and jobs["extract_features"] == 5


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["ood"].__setitem__("k_nn", 3), "'k_nn' was unexpected"),
        (lambda c: c["models"]["tiny_resnet"].pop("penultimate"), "'penultimate' is a required property"),
        (lambda c: c["ood"].__setitem__("ood_sets", ["textures", "svhn"]),
         "ood.ood_sets names 'svhn', which is not defined"),
        (lambda c: c["ood"]["methods"].__setitem__("mahalanobiss", {}), "unknown OOD method 'mahalanobiss'"),
        (lambda c: c.__setitem__("target_model", "resnet"), "target_model names 'resnet'"),
        (lambda c: c["models"]["tiny_resnet"].__setitem__("penultimate", "fc"),
         "models.tiny_resnet.penultimate 'fc' must be one of its layers"),
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
    lints = {line.strip() for line in (out.stdout + out.stderr).splitlines() if line.startswith("    * ")}
    assert lints <= {"* Specify a conda environment or container for each rule.:"}, lints


def test_imagenet_config_dry_runs_on_a_fake_tree(tmp_path):
    """The real-data example plans every job once its paths exist (no weights or images are read in a dry run)."""
    import yaml

    config = yaml.safe_load((ROOT / "config" / "imagenet_resnet50.yaml").read_text())
    for spec in config["datasets"].values():
        spec["path"] = str(tmp_path / spec["path"].lstrip("/"))
        (tmp_path / spec["path"] / "n01440764").mkdir(parents=True)
    model = config["models"]["resnet50"]
    model["checkpoint"] = str(tmp_path / "resnet50.pth")
    (tmp_path / "resnet50.pth").write_bytes(b"")
    model["classes_from_folder"] = config["datasets"]["imagenet_val"]["path"]
    result = snakemake(tmp_path, "-n", "results/ood_table.csv", config=write_config(tmp_path, config))
    assert result.returncode == 0, result.stderr[-2000:]
    assert planned_jobs(result) == {"extract_features": 6, "score_ood": 3, "make_ood_table": 1}
