"""peekflow.workflow.cost_model: job work read back from the requests, the list schedule's makespan on planted graphs,
and the table of a real dry run."""

from __future__ import annotations

import numpy as np
import pytest

from peekflow.workflow import cost_model, resources
from peekflow.workflow.cost_model import Job, wall_hours


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("threads", [1, 4])
def test_work_read_back_from_a_request_is_the_work_rounded_up_by_at_most_a_minute(gpu, threads):
    speed = resources.GPU_SPEEDUP if gpu else 1 + resources.THREAD_EFFICIENCY * (threads - 1)
    for seconds in np.random.default_rng(0).uniform(1e3, 1e7, 50) * speed / 50:
        job = Job("r")
        job.threads, job.runtime = threads, resources.request(seconds, 1000, threads=threads, gpu=gpu)["runtime"]
        floor = resources.MIN_MINUTES * 60 / resources.SAFETY * speed  # below the 5-minute floor: an upper bound
        assert seconds - 1e-6 <= job.work_seconds(gpu) <= max(seconds + 60 / resources.SAFETY * speed, floor)


def chain(spec):
    """Jobs from (name, inputs) pairs; job `name` writes file `name`."""
    jobs = []
    for name, inputs in spec:
        job = Job(name)
        job.outputs, job.inputs = [name], list(inputs)
        jobs.append(job)
    return jobs


def test_makespan_of_planted_graphs():
    # two GPU jobs of 3 h and 2 h, a CPU job of 1.5 h after the 2 h one: the 2 h job's path is longer, so it goes first
    jobs = chain([("a", []), ("b", []), ("c", ["b"])])
    assert wall_hours(jobs, [3.0, 2.0, 1.5], [True, True, False], gpus=1) == pytest.approx(5.0)  # b 0-2, a 2-5
    assert wall_hours(jobs, [3.0, 2.0, 1.5], [True, True, False], gpus=2) == pytest.approx(3.5)
    # CPU jobs never wait for a GPU, GPU jobs do: w holds the only GPU when y becomes ready at 1 h
    jobs = chain([("x", []), ("y", ["x"]), ("z", ["y"]), ("w", [])])
    assert wall_hours(jobs, [1.0, 1.0, 1.0, 2.5], [False, True, False, True], gpus=1) == pytest.approx(4.5)
    assert wall_hours(jobs, [1.0, 1.0, 1.0, 2.5], [False, True, False, True], gpus=2) == pytest.approx(3.0)
    # 16 equal shards on 16 GPUs take one shard's time, then their merge
    jobs = chain([*((f"s{i}", []) for i in range(16)), ("m", [f"s{i}" for i in range(16)])])
    assert wall_hours(jobs, [2.0] * 16 + [0.5], [True] * 16 + [False], gpus=16) == pytest.approx(2.5)
    assert wall_hours(jobs, [2.0] * 16 + [0.5], [True] * 16 + [False], gpus=4) == pytest.approx(8.5)


def test_cost_table_of_the_embedded_default(tmp_path):
    from workflow import ROOT, snakemake

    result = snakemake(tmp_path, "-n", "--cores", "2", "--config", "device=cuda", config=ROOT / "config" / "config.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = cost_model.planned_jobs(result.stdout)
    planned = int(result.stdout.split("\ntotal")[1].split()[0])
    assert len(jobs) == planned - 1  # every job but `all`
    table = cost_model.cost_table(result.stdout, gpus=2)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    stats = result.stdout.split("Job stats:")[1].split("\ntotal")[0].splitlines()[3:]  # "rule  count" lines
    for rule, count in (line.split() for line in stats):
        if rule != "all":
            assert rows[rule].split(" | ")[1] == count, rule
    assert rows["**all**"].split(" | ")[1] == str(len(jobs))
    assert "- |" in rows["make_ood_table"] and "Wall time on 2 GPUs" in table
