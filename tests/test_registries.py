"""A method is registered once and every other place asks the registry: a throw-away prototype method (a data-free
bank) and OOD detector (one a GPU speeds up), registered at run time and nowhere else (tests/throwaway.py), pass the
config checks, are planned by a dry run, and get their SLURM requests."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import throwaway
from peekflow.ood import base as ood_registry
from peekflow.prototypes import methods as prototype_registry
from peekflow.workflow import preflight, replicas, resources
from peekflow.workflow.config_checks import config_problems, fill_defaults, reference_problems
from peekflow.workflow.config_schema import workflow_schema
from peekflow.workflow.requests import Requests, score_gpus
from workflow import ROOT, snakemake_exe, tiny_config, write_config

# registers the throw-away methods, then runs Snakemake's command line in the same process
REGISTER_AND_RUN = "import sys, throwaway; throwaway.register(); from snakemake.cli import main; main(sys.argv[1:])"


def throwaway_config() -> dict:
    """The tiny config without the neuron stages, with the throw-away prototypes, their bank and detector."""
    config = {k: v for k, v in tiny_config().items() if k not in ("labels", "neurons", "emergence")}
    config["prototypes"]["methods"]["throwaway"] = {"size": 32, "per_class": 1, "steps": 5, "seed": 0}
    config["ood"]["methods"] |= {throwaway.DETECTOR: {"scale": 2.0}, "knn_throwaway": {"k": 1}}
    return config


@pytest.fixture
def registered(monkeypatch):
    """The throw-away methods registered in this process until the test ends."""
    ood_registry.available()  # the package's detectors registered first, in the registry the test leaves behind
    monkeypatch.setattr(prototype_registry, "_METHODS", dict(prototype_registry._METHODS))
    monkeypatch.setattr(ood_registry, "_REGISTRY", dict(ood_registry._REGISTRY))
    throwaway.register()


def test_the_config_checks_know_a_registered_method(registered):
    config, schema = throwaway_config(), workflow_schema()
    assert config_problems(config, schema) == []
    bad = throwaway_config()
    bad["prototypes"]["methods"]["throwaway"]["stepz"] = 5  # its settings class checks its block
    assert config_problems(bad, schema) == ["prototypes.methods.throwaway.stepz: unknown key (did you mean steps?)"]
    fill_defaults(config, schema)
    assert config["prototypes"]["methods"]["throwaway"]["batch_size"] == 64  # DreamSettings' default
    assert reference_problems(config) == []
    assert ood_registry.detector_class("knn_throwaway").prototype_bank == "throwaway"  # its bank's variants
    replicas.expand(config)
    assert preflight.prototype_problems(config, "tiny_resnet") == []
    work = Requests(config).work("synthesize_prototypes", SimpleNamespace(model="tiny_resnet", proto="throwaway"), [])
    assert work.seconds == resources.synthesis(3, 5, 32, 64)[0] and work.network
    assert score_gpus(throwaway.DETECTOR) == 1 and score_gpus("knn_throwaway") == 1


def planned(stdout: str) -> list[dict]:
    """Every job of a dry run's listing: rule, wildcards, resources and shell command."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", stdout)[1:]:
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.M))
        jobs.append({"rule": block.split()[1].rstrip(":"),
                     "wildcards": dict(kv.split("=", 1) for kv in fields.get("wildcards", "").split(", ") if kv),
                     "resources": dict(kv.split("=", 1) for kv in fields.get("resources", "").split(", ") if kv),
                     "shell": re.search(r"^Shell command: (.*)$", block, flags=re.M)})
    return jobs


def test_a_dry_run_plans_a_registered_method_and_slurm_requests_its_gpu(registered, tmp_path):
    config_file = write_config(tmp_path, throwaway_config())
    profile = ROOT / "workflow" / "profiles" / "slurm"
    cmd = [sys.executable, "-c", REGISTER_AND_RUN, "-n", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(config_file), "--cores", "1024", "--profile", str(profile),
           "--default-resources", "slurm_partition=debug"]
    paths = [str(Path(__file__).parent), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths),
           "PATH": f"{Path(snakemake_exe()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = planned(result.stdout)

    def of(rule, **wildcards):
        return [job for job in jobs if job["rule"] == rule and wildcards.items() <= job["wildcards"].items()]

    (synthesis,) = of("synthesize_prototypes", proto="throwaway")
    assert synthesis["shell"].group(1).startswith("peekflow dream ")  # its registered command
    assert synthesis["resources"]["gpu"] == "1"  # a network rule
    config = throwaway_config()
    fill_defaults(config, workflow_schema())
    replicas.expand(config)
    request = Requests(config).request("synthesize_prototypes", SimpleNamespace(**synthesis["wildcards"]), [])
    assert {k: int(synthesis["resources"][k]) for k in request} == request  # sized by its settings
    assert of("evaluate_prototypes", proto="throwaway") and of("extract_prototype_features", proto="throwaway")
    evaluated = ["shapes_val", "novel_shapes", "textures", "noise"]
    for run, gpu in [(throwaway.DETECTOR, "1"), ("knn_throwaway", "1"), ("msp", "0")]:
        scores = of("score_ood", method=run)
        assert sorted(job["wildcards"]["dataset"] for job in scores) == sorted(evaluated), run
        assert {job["resources"]["gpu"] for job in scores} == {gpu}, run
    (table,) = of("make_ood_table")
    assert f"{throwaway.DETECTOR}=" in table["shell"].group(1)
