"""The slurm profile: cluster choices only (every rule's mem_mb, runtime and cpus_per_task come from the workflow), a
GPU where a network runs, and the tiny workflow through it on a real single-node Slurm.

tests/slurm/start.sh installs (Debian's slurmctld, slurmd, munge) and starts that Slurm as root, with one stand-in
GPU (gres File=/dev/null) so that GPU rules schedule on a GPU-free machine and run on its CPU. The test skips only
where that cannot be done (not root, no apt-get, or a Slurm of the machine's own that the script leaves alone).
"""

import re
import subprocess
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from peekflow.workflow.resource_table import planned_requests
from workflow import ROOT, planned_jobs, snakemake, tiny_config, write_config

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
START = ROOT / "tests" / "slurm" / "start.sh"
TARGET = "results/ood_table.csv"


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.v8+.yaml").read_text())


def rule_blocks() -> dict[str, str]:
    """Rule name -> its text, from workflow/rules/*.smk."""
    blocks = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^rule (\w+):\n", smk.read_text(), flags=re.M)
        blocks.update(zip(parts[1::2], parts[2::2]))
    return blocks


def runs_a_network(block: str) -> bool:
    """The rule loads or trains a network (the peekflow command takes or writes a checkpoint)."""
    return bool(re.search(r"--(probe-|out-)?checkpoint\b", block))


def test_profile_asks_for_every_rule_and_a_gpu_only_where_a_network_runs():
    prof = profile()
    assert prof["executor"] == "slurm" and prof["slurm-status-command"] == "squeue"
    assert not {"slurm_partition", "slurm_account"} & set(prof["default-resources"])  # documented placeholders
    requests = prof["set-resources"]
    blocks = rule_blocks()
    assert sorted(set(requests) - set(blocks)) == [], "set-resources names rules the workflow does not have"
    for rule, block in blocks.items():
        # the workflow sizes every job from its data: the profile holds no numbers of its own
        assert re.search(rf'^    resources:\n        \*\*job_resources\("{rule}"\),$', block, flags=re.M), rule
        asked = requests.get(rule, {})
        assert not {"cpus_per_task", "mem_mb", "runtime"} & set(asked), f"{rule}: sized by the workflow"
        assert "--gres" not in str(asked.get("slurm_extra", "")) and "--gpus" not in str(asked.get("slurm_extra", ""))
        if runs_a_network(block):
            assert asked.get("gpu") == 1, f"{rule} runs a network: gpu: 1"
        elif rule == "score_ood":  # a GPU for the methods whose detector says one helps (the next test)
            assert "score_gpus(wildcards.method)" in asked["gpu"]
        else:  # a CPU rule: no GPU
            assert asked.get("gpu") in (None, 0), rule


def score_gpus(run: str) -> int:
    """The GPUs that the profile's expression for score_ood asks for the jobs of OOD run `run`."""
    from argparse import Namespace

    expression = profile()["set-resources"]["score_ood"]["gpu"]
    return eval(expression, {}, {"wildcards": Namespace(method=run)})  # noqa: S307 (our profile)


def test_score_jobs_ask_a_gpu_exactly_for_the_methods_it_speeds_up():
    """The profile's expression for score_ood and the detectors' own `gpu_helps` (which sizes the job) agree for
    every registered method, each swept setting's runs included, and for every run of the shipped configs."""
    from peekflow.ood.base import available, detector_class
    from peekflow.workflow.config_checks import ood_runs

    for name in available():
        for run in (name, *(f"{name}_{key}5" for key in detector_class(name).sweeps)):
            assert score_gpus(run) == int(detector_class(name).gpu_helps), run
    assert {m for m in available() if detector_class(m).gpu_helps} >= {"odin", "knn", "knn_deepinversion"}
    for path in sorted((ROOT / "config").glob("*.yaml")):
        methods = (yaml.safe_load(path.read_text()).get("ood") or {}).get("methods") or {}
        for run, (method, _) in ood_runs({"ood": {"methods": methods}}).items():
            assert score_gpus(run) == int(detector_class(method).gpu_helps), (path.name, run)


@pytest.fixture(scope="module")
def slurm_cluster():
    started = subprocess.run(["bash", str(START)], capture_output=True, text=True)
    if started.returncode == 2:
        pytest.skip(f"no single-node Slurm here: {started.stderr.strip().splitlines()[-1]}")
    assert started.returncode == 0, started.stdout + started.stderr


def slurm_jobs() -> list[dict]:
    """Every job that Slurm still remembers (MinJobAge): scontrol's key=value fields."""
    out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True, check=True).stdout
    return [dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", line)) for line in out.splitlines() if line.startswith("JobId=")]


def megabytes(slurm_size: str) -> float:
    """scontrol's 16000M / 62.50G -> MB."""
    return float(slurm_size[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[slurm_size[-1]]


def rule_of(comment: str, rules) -> str:
    """The plugin's job comment is rule_<rule> or rule_<rule>_wildcards_<values>."""
    return next(r for r in sorted(rules, key=len, reverse=True)
                if comment == f"rule_{r}" or comment.startswith(f"rule_{r}_wildcards_"))


def slurm_config() -> dict:
    """The tiny config with fewer jobs on the way to the table (each Slurm job starts Snakemake twice): one OOD set,
    and the methods that cover both kinds of score job, on features (CPU) and through the network (ODIN, GPU)."""
    config = tiny_config()
    config["ood"]["ood_sets"] = ["novel_shapes"]
    config["ood"]["methods"] = {m: config["ood"]["methods"][m] for m in ["msp", "energy", "odin", "knn"]}
    return config


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm").resolve()
    config = write_config(work, slurm_config())
    through_slurm = [
        "--profile", str(PROFILE),
        # the local cluster: its partition; no account (it has no accounting)
        "--default-resources", "slurm_partition=debug",
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs", TARGET,  # the target after a flag: options before it take lists
    ]
    # each job's request, as the real run plans it: threads uncapped by this machine's cores, as for Slurm jobs
    dry_run = snakemake(work, "-n", "--cores", "1024", *through_slurm, config=config)
    planned = planned_jobs(dry_run)
    assert planned, "the dry run planned no jobs"
    before = max((int(job["JobId"]) for job in slurm_jobs()), default=0)
    result = snakemake(work, *through_slurm, config=config)
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = [job for job in slurm_jobs() if int(job["JobId"]) > before and job["WorkDir"] == str(work)]
    return SimpleNamespace(work=work, planned=planned, requests=planned_requests(dry_run.stdout), result=result,
                           jobs=jobs)


@pytest.mark.slow
def test_tiny_workflow_through_the_profile_gives_a_complete_ood_table(slurm_run):
    table = pd.read_csv(slurm_run.work / TARGET)
    config = slurm_config()
    expected = {(m, o) for m in config["ood"]["methods"] for o in [*config["ood"]["ood_sets"], "average"]}
    assert {(m, o) for m, o in zip(table.method, table.ood_dataset)} >= expected
    assert table.auroc.between(0, 100).all()


@pytest.mark.slow
def test_every_job_ran_as_a_slurm_job_with_the_workflows_request(slurm_run):
    jobs = slurm_run.jobs
    network_rules = {r for r, b in rule_blocks().items() if runs_a_network(b)}
    gpu_runs = [run for run in slurm_config()["ood"]["methods"] if score_gpus(run)]
    assert 0 < len(gpu_runs) < len(slurm_config()["ood"]["methods"])  # score jobs of both kinds
    cpus, mem = {}, {}  # rule -> the CPUs and MB the dry run planned for its jobs
    for rule, req in slurm_run.requests:
        cpus.setdefault(rule, set()).add(req["cpus_per_task"])
        mem.setdefault(rule, []).append(req["mem_mb"])
    by_rule = {}
    for job in jobs:
        rule = rule_of(job["Comment"], slurm_run.planned)
        by_rule[rule] = by_rule.get(rule, 0) + 1
        assert job["JobState"] == "COMPLETED", job
        assert job["Partition"] == "debug"
        assert int(job["MinCPUsNode"]) in cpus[rule], (rule, job["MinCPUsNode"], cpus[rule])
        # inputs that exist when a job is submitted (not yet in the dry run) can only raise its memory, a little here
        assert min(mem[rule]) <= megabytes(job["MinMemoryNode"]) <= 2 * max(mem[rule]), (rule, job["MinMemoryNode"])
        gpu = "gpu" in job.get("TresPerJob", "")
        # the score jobs of the methods a GPU speeds up (ODIN's and KNN's; not their gather_ood_scores jobs) get one
        gpu_score = rule == "score_ood" and any(m in job["Comment"] for m in gpu_runs)
        assert gpu == (rule in network_rules or gpu_score), (rule, job.get("TresPerJob"))
        # the plugin's per-job log, kept by --slurm-keep-successful-logs
        assert list((slurm_run.work / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob(f"{job['JobId']}.log"))
    assert by_rule == slurm_run.planned, "Slurm jobs per rule != the jobs planned"
    assert {"train_model", "extract_features", "score_ood", "make_ood_table"} <= set(by_rule)


@pytest.mark.slow
def test_status_came_from_squeue_not_the_missing_accounting(slurm_run):
    log = slurm_run.result.stderr
    assert "Falling back to 'sacct'" not in log and "slurmdbd job accounting" not in log
    sacct = subprocess.run(["sacct", "-n"], capture_output=True, text=True)
    assert sacct.returncode != 0 or not sacct.stdout.strip()  # no accounting database on this cluster
