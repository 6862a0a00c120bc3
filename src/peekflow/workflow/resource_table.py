"""The requests a dry run plans, per rule, as a markdown table (docs/cluster.md: "Resource requests").

    snakemake -n --configfile config/config.yaml > default.txt
    python -m peekflow.workflow.resource_table default=default.txt imagenet=imagenet.txt

Each job's `resources:` line of the dry run gives its mem_mb, runtime (minutes) and cpus_per_task
(peekflow.workflow.requests); the table shows the largest request of each rule.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

KEYS = ("mem_mb", "runtime", "cpus_per_task")
RULES = ("train_model", "extract_features", "extract_feature_shard", "synthesize_prototypes",
         "synthesize_prototype_shard", "score_ood", "find_outlier_neurons", "extract_patches")


def planned_requests(dry_run: str) -> list[tuple[str, dict[str, int]]]:
    """(rule, {mem_mb, runtime, cpus_per_task}) of every job in a dry run's listing."""
    jobs, rule = [], None
    for line in dry_run.splitlines():
        head = re.match(r"(?:local)?rule (\w+):$", line)
        if head:
            rule = head.group(1)
        elif rule and line.startswith("    resources: "):
            fields = dict(kv.split("=", 1) for kv in line.removeprefix("    resources: ").split(", "))
            if all(k in fields for k in KEYS):
                jobs.append((rule, {k: int(fields[k]) for k in KEYS}))
            rule = None
    return jobs


def largest(jobs: list[tuple[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Rule -> its largest request (by memory, then runtime) among the jobs."""
    out: dict[str, dict[str, int]] = {}
    for rule, req in jobs:
        if rule not in out or (req["mem_mb"], req["runtime"]) > (out[rule]["mem_mb"], out[rule]["runtime"]):
            out[rule] = req
    return out


def table(runs: dict[str, str], rules=RULES) -> str:
    """Markdown: one row per rule, one column per run (name -> dry-run text): `mem_mb MB, runtime min, N CPUs`."""
    per_run = {name: largest(planned_requests(text)) for name, text in runs.items()}
    lines = ["| rule | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for rule in rules:
        cells = [f"{r['mem_mb']} MB, {r['runtime']} min, {r['cpus_per_task']} CPU" if (r := per_run[n].get(rule))
                 else "-" for n in runs]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=DRYRUN", help="a column name and a dry run's saved output")
    args = parser.parse_args(argv)
    runs = dict(run.split("=", 1) for run in args.runs)
    print(table({name: Path(path).read_text() for name, path in runs.items()}))


if __name__ == "__main__":
    main()
