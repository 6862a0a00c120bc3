"""What a planned run costs: per rule, its jobs, CPU-hours and estimated GPU-hours, and the wall time on G GPUs.

    snakemake -n --cores 16 --configfile config/imagenet_resnet50.yaml config/imagenet_shards.yaml \\
        --config device=cuda > plan.txt
    python -m peekflow.workflow.cost_model plan.txt --gpus 16

Input: a dry run's listing, planned with `device: cuda` (so network rules are sized for a GPU). Each job's work is
read back from its runtime request (peekflow.workflow.resources.request): runtime x 60 / SAFETY x the speed it was
sized for (GPU_SPEEDUP on a GPU, else the threads' speed-up) gives the one-thread CPU seconds of the measured per-image
and per-step costs; jobs at the 5-minute floor count as at most that (an upper bound). Which jobs hold a GPU comes from
the SLURM profile (`gpu:` under set-resources, ODIN's expression included).

GPU time: the CPU work divided by a GPU's speed-up over one CPU thread, from rates that benchmarks/gpu_check.py measured
on an H200 with a ResNet-50 at 224 px (benchmarks/README.md): synthesis (DeepInversion, bf16 autocast) and forward
passes (extraction with autocast), each against this machine's CPU cost of the same unit. Other GPUs, other networks
and the changes made since that run move these figures: they are estimates until gpu_check runs again. The request's
GPU_SPEEDUP is deliberately lower (a job must not run out of time); this model is the expected figure.

Wall time: list scheduling of the job graph (a job's inputs made by another job are its dependencies), longest path
to the end first; GPU jobs on `--gpus` GPUs, CPU jobs on as many CPU nodes as are ready (the queue's CPU side is
rarely the bottleneck; say so where it is).
"""

from __future__ import annotations

import argparse
import heapq
import re
from pathlib import Path

import yaml

from peekflow.workflow import resources as costs

PROFILE = Path(__file__).resolve().parents[3] / "workflow" / "profiles" / "slurm" / "config.v8+.yaml"
# Measured on an NVIDIA H200 (benchmarks/README.md, gpu_check, ResNet-50 at 224 px): DeepInversion with bf16 autocast
# renders 11.6 prototypes/s at 100 steps each; extraction with autocast reads 2,106-2,196 images/s (0-4 loader
# workers; its bare forward pass: 10,675 images/s)
GPU_IMAGE_STEPS_PER_S = 1160.0
GPU_IMAGES_PER_S = 2100.0
GPU_SPEEDUP = {"synthesis": GPU_IMAGE_STEPS_PER_S * costs.STEP_S_PER_IMAGE,  # ~380 CPU threads
               "forward": GPU_IMAGES_PER_S * costs.EXTRACT_S_PER_IMAGE}  # ~360 CPU threads
SYNTHESIS_RULES = ("synthesize_", "find_outlier_neurons", "run_vital")  # prefixes of the rules that optimise images


def speedup(rule: str) -> float:
    """A GPU's measured speed-up over one CPU thread for the work of `rule`."""
    return GPU_SPEEDUP["synthesis" if rule.startswith(SYNTHESIS_RULES) else "forward"]


class Job:
    def __init__(self, rule: str):
        self.rule, self.inputs, self.outputs, self.wildcards, self.threads = rule, [], [], {}, 1
        self.runtime = self.cpus = 0

    def work_seconds(self, gpu: bool) -> float:
        """One-thread CPU seconds of the job, read back from its runtime request."""
        return self.runtime * 60 / costs.SAFETY * costs.speed(self.threads, gpu)


def planned_jobs(dry_run: str) -> list[Job]:
    """The jobs of a dry run's listing (rule `all` and jobs without resources left out)."""
    jobs, job = [], None
    for line in dry_run.splitlines():
        head = re.match(r"(?:local)?rule (\w+):$", line)
        if head:
            job = Job(head.group(1))
            continue
        if job is None or not line.startswith("    "):
            continue
        key, _, value = line.strip().partition(": ")
        if key == "input":
            job.inputs = value.split(", ")
        elif key == "output":
            job.outputs = value.split(", ")
        elif key == "wildcards":
            job.wildcards = dict(kv.split("=", 1) for kv in value.split(", "))
        elif key == "threads":
            job.threads = int(value)
        elif key == "resources":
            fields = dict(kv.split("=", 1) for kv in value.split(", "))
            if "runtime" in fields and job.rule != "all":
                job.runtime, job.cpus = int(fields["runtime"]), int(fields.get("cpus_per_task", 1))
                jobs.append(job)
            job = None
    return jobs


def gpu_rules(profile: Path = PROFILE) -> dict[str, object]:
    """Rule -> its `gpu:` entry in the SLURM profile (an int, or an expression of `wildcards`)."""
    entries = yaml.safe_load(profile.read_text()).get("set-resources", {})
    return {rule: entry["gpu"] for rule, entry in entries.items() if isinstance(entry, dict) and "gpu" in entry}


def holds_gpu(job: Job, rules: dict[str, object]) -> bool:
    entry = rules.get(job.rule, 0)
    if isinstance(entry, str):  # e.g. "1 if wildcards.method.startswith('odin') else 0"
        entry = eval(entry, {}, {"wildcards": argparse.Namespace(**job.wildcards)})  # noqa: S307 (our profile)
    return bool(int(entry))


def hours(job: Job, gpu: bool) -> float:
    """Expected hours of the job: on a GPU, its CPU work over the GPU's measured speed-up; else its threads' time."""
    seconds = job.work_seconds(gpu)
    if gpu:
        return seconds / speedup(job.rule) / 3600
    return seconds / costs.speed(job.threads) / 3600


def wall_hours(jobs: list[Job], durations: list[float], on_gpu: list[bool], gpus: int) -> float:
    """Makespan of list scheduling: ready jobs by longest remaining path; GPU jobs share `gpus` GPUs."""
    made_by = {out: i for i, job in enumerate(jobs) for out in job.outputs}
    needs = [{made_by[f] for f in job.inputs if f in made_by} for job in jobs]
    users: list[list[int]] = [[] for _ in jobs]
    for i, deps in enumerate(needs):
        for d in deps:
            users[d].append(i)
    tail = [0.0] * len(jobs)  # longest path from the start of a job to the end of the run
    for i in reversed(topological(needs)):
        tail[i] = durations[i] + max((tail[u] for u in users[i]), default=0.0)
    waiting = [len(d) for d in needs]
    ready = [(-tail[i], i) for i in range(len(jobs)) if not waiting[i]]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []  # (end time, job)
    now, free = 0.0, gpus
    while ready or running:
        held = []
        while ready:
            _, i = heapq.heappop(ready)
            if on_gpu[i] and free == 0:
                held.append((-tail[i], i))
                continue
            free -= on_gpu[i]
            heapq.heappush(running, (now + durations[i], i))
        for item in held:
            heapq.heappush(ready, item)
        now, i = heapq.heappop(running)
        free += on_gpu[i]
        for u in users[i]:
            waiting[u] -= 1
            if not waiting[u]:
                heapq.heappush(ready, (-tail[u], u))
    return now


def topological(needs: list[set[int]]) -> list[int]:
    order, seen = [], set()

    def visit(i):
        if i not in seen:
            seen.add(i)
            for d in needs[i]:
                visit(d)
            order.append(i)

    for i in range(len(needs)):
        visit(i)
    return order


def cost_table(dry_run: str, gpus: int = 16, profile: Path = PROFILE) -> str:
    """Markdown: per rule its jobs, CPU-hours (one thread), estimated GPU-hours; then the run's totals and wall time."""
    jobs = planned_jobs(dry_run)
    rules = gpu_rules(profile)
    on_gpu = [holds_gpu(job, rules) for job in jobs]
    durations = [hours(job, g) for job, g in zip(jobs, on_gpu)]
    per_rule: dict[str, list] = {}
    for job, g, h in zip(jobs, on_gpu, durations):
        row = per_rule.setdefault(job.rule, [0, 0.0, 0.0, 0.0])
        row[0] += 1
        row[1] += job.work_seconds(g) / 3600
        row[2 if g else 3] += h
    cell = lambda v: "-" if not v else f"{v:,.2f}" if v >= 0.005 else "< 0.01"  # noqa: E731
    lines = ["| rule | jobs | work, CPU-hours of one thread | GPU-hours (estimate) | CPU-job hours |",
             "|---|---:|---:|---:|---:|"]
    for rule, (n, cpu, gpu, cpu_job) in sorted(per_rule.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {rule} | {n} | {cpu:,.1f} | {cell(gpu)} | {cell(cpu_job)} |")
    total = [sum(r[k] for r in per_rule.values()) for k in range(4)]
    lines.append(f"| **all** | {total[0]:,} | {total[1]:,.1f} | {cell(total[2])} | {cell(total[3])} |")
    wall = wall_hours(jobs, durations, on_gpu, gpus)
    lines += ["", f"Wall time on {gpus} GPUs (CPU jobs beside them): **{wall:,.1f} h** (estimate: a GPU does the work "
              f"of {GPU_SPEEDUP['synthesis']:.0f} CPU threads in synthesis, {GPU_SPEEDUP['forward']:.0f} in forward "
              "passes, as measured on an H200)."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dry_run", help="a dry run's saved output (planned with device: cuda)")
    parser.add_argument("--gpus", type=int, default=16, help="GPUs the wall time is computed for")
    args = parser.parse_args(argv)
    text = Path(args.dry_run).read_text()
    if not planned_jobs(text):
        raise SystemExit(f"{args.dry_run}: no planned job with a resources line; save the output of a dry run "
                         "(snakemake -n ... > plan.txt) that has jobs to do")
    print(cost_table(text, args.gpus))


if __name__ == "__main__":
    main()
