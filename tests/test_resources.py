"""Every job's request (mem_mb, runtime, cpus_per_task) comes from its data: peekflow.workflow.resources' formulas, and
the requests that dry runs of the shipped configs plan (the embedded default fits a 2-CPU, 8 GB node)."""

from types import SimpleNamespace

import pytest
import yaml

from peekflow.workflow import cost_model, replicas, resources
from peekflow.workflow.requests import Requests
from peekflow.workflow.resource_table import largest, planned_requests, table
from test_config_checks import validated
from workflow import ROOT, fake_user_inputs, snakemake

IMAGENET = ROOT / "config" / "imagenet_resnet50.yaml"


def test_a_retry_asks_more_within_the_floors_and_caps():
    first = resources.request(*resources.forward(50_000, 224, 256), threads=4, attempt=1)
    second = resources.request(*resources.forward(50_000, 224, 256), threads=4, attempt=2)
    assert second["mem_mb"] == 2 * first["mem_mb"] and second["runtime"] == 2 * first["runtime"]
    tiny = resources.request(0, 0)
    assert tiny == {"mem_mb": resources.MIN_MB, "runtime": resources.MIN_MINUTES, "cpus_per_task": 1}
    huge = resources.request(1e12, 1e9, attempt=3)
    assert huge["mem_mb"] == resources.MAX_MB and huge["runtime"] == resources.MAX_MINUTES


def test_a_gpu_and_threads_shorten_the_runtime_and_workers_ask_cpus():
    work = resources.synthesis(1000, 2000, 224, 64)
    cpu, threads, gpu = (resources.request(*work, threads=t, gpu=g) for t, g in [(1, False), (4, False), (1, True)])
    assert gpu["runtime"] < threads["runtime"] < cpu["runtime"]
    assert resources.request(*work, threads=4, workers=8)["cpus_per_task"] == 9  # loaders + the main process
    assert resources.request(*work, threads=4, workers=2)["cpus_per_task"] == 4


def test_costs_grow_with_images_steps_pixels_and_bank():
    assert resources.synthesis(10, 200, 224, 64)[0] == pytest.approx(10 * 200 * resources.STEP_S_PER_IMAGE)
    assert resources.forward(1000, 224, 64)[0] == pytest.approx(4 * resources.forward(1000, 112, 64)[0])
    knn, msp = resources.scoring(10_000, 1000, 2048, 1000, True), resources.scoring(0, 1000, 2048, 1000)
    assert knn[0] > msp[0] and knn[1] > msp[1]


def dry_run_requests(work, config, *args):
    result = snakemake(work, "-n", *args, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, planned_requests(result.stdout)


@pytest.fixture(scope="module")
def default_dry_run(tmp_path_factory):
    """The embedded default, planned for a 2-core machine."""
    return dry_run_requests(tmp_path_factory.mktemp("default"), ROOT / "config" / "config.yaml", "--cores", "2")


@pytest.fixture(scope="module")
def imagenet_dry_run(tmp_path_factory):
    """config/imagenet_resnet50.yaml on stand-in folders and weights (its `images:` give the real counts), on GPUs."""
    work = tmp_path_factory.mktemp("imagenet")
    fake_user_inputs(work, yaml.safe_load(IMAGENET.read_text()))
    return dry_run_requests(work, IMAGENET, "--cores", "16", "--config", "device=cuda")


def test_every_job_of_the_embedded_default_fits_a_small_node(default_dry_run):
    text, jobs = default_dry_run
    assert len(jobs) == text.count("\nrule ") + text.count("\nlocalrule ") - 1  # every job but `all`
    assert {"generate_dataset", "train_model", "extract_features", "score_ood", "find_outlier_neurons",
            "extract_patches"} <= {rule for rule, _ in jobs}
    for rule, req in jobs:
        assert req["mem_mb"] <= 8000 and req["cpus_per_task"] <= 2, (rule, req)
        assert resources.MIN_MINUTES <= req["runtime"] <= 180, (rule, req)


def test_imagenet_asks_more_for_its_big_rules(default_dry_run, imagenet_dry_run):
    small, big = largest(default_dry_run[1]), largest(imagenet_dry_run[1])
    for rule in ["extract_features", "synthesize_prototypes", "score_ood", "extract_prototype_features"]:
        assert big[rule]["mem_mb"] > small[rule]["mem_mb"], rule
    for rule in ["extract_features", "synthesize_prototypes"]:
        assert big[rule]["runtime"] > 10 * small[rule]["runtime"], rule
    assert big["score_ood"]["runtime"] > small["score_ood"]["runtime"]  # KNN on the GPU: minutes, not hours
    assert big["extract_features"]["cpus_per_task"] == 9  # extract.num_workers 8 + the main process
    assert big["score_ood"]["mem_mb"] > 16_000  # KNN's bank: 1.28M x 2048 float32 and the logits
    assert "| score_ood |" in table({"default": default_dry_run[0], "imagenet": imagenet_dry_run[0]})


def test_the_dry_run_plans_what_the_workflow_layer_computes(default_dry_run):
    """Every job's request is peekflow.workflow.requests' for its rule, wildcards and threads (no input exists yet)."""
    text, jobs = default_dry_run
    config = validated(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    replicas.expand(config)
    planned, r = cost_model.planned_jobs(text), Requests(config)
    assert [job.rule for job in planned] == [rule for rule, _ in jobs]
    for job, (rule, request) in zip(planned, jobs):
        assert r.request(rule, SimpleNamespace(**job.wildcards), [], job.threads) == request, (rule, job.wildcards)
