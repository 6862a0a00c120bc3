"""benchmarks/gpu_workflow.py, the device script's CPU side, on the finished tiny run: the reference it packs, the
checks it makes (a run compared with itself passes; planted differences fail, naming the file or row), and the run's
preparation, after which rule all on another device retrains nothing."""

import importlib.util
import json
import shutil

import h5py
import pandas as pd
import pytest

from workflow import ROOT, planned_jobs

SCRIPT = ROOT / "benchmarks" / "gpu_workflow.py"


@pytest.fixture(scope="module")
def gw():
    spec = importlib.util.spec_from_file_location("gpu_workflow", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def reference(gw, finished_run, tmp_path):
    tar = tmp_path / "reference.tar.gz"
    gw.reference(finished_run, tar, finished_run / "config.yaml")
    return gw.unpacked(tar, tmp_path / "ref")


def test_reference_packs_what_the_gpu_run_starts_from_and_is_compared_with(reference, finished_run):
    packed = {p.relative_to(reference).as_posix() for p in reference.rglob("*") if p.is_file()}
    assert {"config.yaml", "reference.json", "results/ood_table.csv", "results/models/tiny_resnet/model.pt",
            "results/features/tiny_resnet/shapes_val.h5", "results/prototypes/tiny_resnet/deepdream_quality.json",
            "results/probing/tiny_resnet/tiny_vgg/probing.json", "results/neurons/tiny_resnet/layer4/vital.h5"} <= packed
    hashes = json.loads((reference / "reference.json").read_text())["attributes"]
    assert set(hashes) == {f"resources/datasets/{s}/attributes.csv" for s in ("shapes", "novel_shapes", "textures",
                                                                              "noise")}


def test_a_run_compared_with_itself_passes(gw, reference, finished_run):
    checks = gw.compare(reference, finished_run)
    assert checks and all(c["passed"] for c in checks), [c for c in checks if not c["passed"]]
    names = " ".join(c["name"] for c in checks)
    for what in ("shapes_val.h5 logits", "features/layer4", "OOD table AUROC", "deepinversion_quality.json",
                 "hungarian_accuracy", "VITAL", "atlas"):
        assert what in names, what


def test_planted_differences_fail_naming_the_file_or_row(gw, reference, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run / "results", run / "results")
    with h5py.File(run / "results/features/tiny_resnet/noise.h5", "r+") as h5:
        logits = h5["logits"][:]
        logits[3, 1] += 0.01 * abs(logits).max()  # 1% of the largest logit
        h5["logits"][:] = logits
    table = pd.read_csv(run / "results/ood_table.csv")
    table.loc[(table.method == "knn") & (table.ood_dataset == "textures"), "auroc"] += 0.7
    table.to_csv(run / "results/ood_table.csv", index=False)
    (run / "results/probing/tiny_resnet/tiny_vgg/probing.json").unlink()
    failed = {c["name"]: c for c in gw.compare(reference, run) if not c["passed"]}
    assert set(failed) == {"store results/features/tiny_resnet/noise.h5 logits (rel)",
                           "OOD table AUROC, worst row (points)", "probing results/probing/tiny_resnet/tiny_vgg/probing.json"}
    assert failed["OOD table AUROC, worst row (points)"]["detail"] == "tiny_resnet/knn/textures"
    assert failed["probing results/probing/tiny_resnet/tiny_vgg/probing.json"]["detail"].endswith("probing.json is missing")


def test_prepared_run_retrains_nothing_on_another_device(gw, reference, tmp_path):
    """The data regenerated (hashes as the reference's), the checkpoints in place: rule all plans every stage but
    training (here on the CPU: the device the GPU run names is only a --config value)."""
    work = tmp_path / "work"
    gw.prepare(reference, work, cores=2)
    assert gw.attribute_hashes(work) == json.loads((reference / "reference.json").read_text())["attributes"]
    plan = gw.snakemake(work, "-n", "--config", "device=cpu", "--rerun-triggers", "mtime", cores=2)
    assert plan.returncode == 0, plan.stderr[-2000:]
    jobs = planned_jobs(plan)
    assert "train_model" not in jobs and jobs["extract_features"] >= 5 and jobs["score_ood"] >= 1, jobs


def test_reference_of_an_unfinished_run_is_refused(gw, tmp_path):
    with pytest.raises(SystemExit, match="no results/ood_table.csv"):
        gw.reference(tmp_path, tmp_path / "r.tar.gz", ROOT / "config" / "config.yaml")
    assert not (tmp_path / "r.tar.gz").exists()
