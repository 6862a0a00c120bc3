"""Rewrite the marked results sections of docs/results.md (or another page) from a finished run's summary files, so
no number is typed by hand.

    python -m peekflow.workflow.readme_numbers [--results results] [--readme docs/results.md] [--command "..."]

Each section sits between `<!-- numbers:<name>:start -->` and `<!-- numbers:<name>:end -->`; only those lines change:
- `ood`: average FPR95 / AUROC per method (mean ± std over the replicas, n), and each OOD group's average AUROC
  where the run grouped its OOD sets (ood.groups: near, far), from results/ood_summary.csv
- `ood_sets`: AUROC per method and OOD set, from results/ood_summary.csv
- `prototypes`: target and probe accuracy per prototype method, from results/prototypes_summary.csv
- `probing`: probing accuracy (best match, Hungarian), from results/probing_summary.csv
- `semantics`: the Mantel tests against WordNet (r and p of probing's similarity against Wu-Palmer, of DORA's output
  units' EA distance against WordNet distance), from results/semantics_summary.csv
- `semantic_depths`: probing's accuracy by hypernym depth (best match, Hungarian, chance), from
  results/semantic_depths_summary.csv
A section whose summary file is missing is left as it is (and named on stderr).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from peekflow.io import atomic_path

RESULTS_PAGE = Path("docs/results.md")  # the embedded default's measured results, relative to the project root
COMMAND = "python -m peekflow.workflow.readme_numbers"  # this tool, as the note under each section names it


def _pm(row, key: str, digits: int) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")


def _table(rows: list[dict]) -> str:
    return pd.DataFrame(rows).to_markdown(index=False)


def _is_average(name: str) -> bool:
    """The overall "average" row or a group's "average_<group>" row (ood.groups), not an OOD set."""
    return name == "average" or name.startswith("average_")


def ood_section(summary: pd.DataFrame) -> str:
    groups = [s for s in dict.fromkeys(summary.ood_dataset) if s.startswith("average_")]
    indexed = summary.set_index(["model", "method", "ood_dataset"])
    rows = [{"model": r["model"], "method": r["method"], "average FPR95 ↓": _pm(r, "fpr95", 1),
             "average AUROC ↑": _pm(r, "auroc", 1),
             **{f"{g.removeprefix('average_')} AUROC ↑": _pm(indexed.loc[(r["model"], r["method"], g)], "auroc", 1)
                for g in groups}, "n": r["n"]}
            for _, r in summary[summary.ood_dataset == "average"].iterrows()]
    return _table(rows)


def ood_sets_section(summary: pd.DataFrame) -> str:
    sets = [s for s in dict.fromkeys(summary.ood_dataset) if not _is_average(s)]
    rows = []
    for (model, method), group in summary.groupby(["model", "method"], sort=False):
        by_set = group.set_index("ood_dataset")
        rows.append({"model": model, "method": method,
                     **{f"{s} AUROC": _pm(by_set.loc[s], "auroc", 1) for s in sets}, "n": int(group.n.iloc[0])})
    return _table(rows)


def report_section(summary: pd.DataFrame, keys: dict[str, str], digits: int = 2) -> str:
    rows = [{"model": r["model"], "of": r["what"], **{label: _pm(r, key, digits) for key, label in keys.items()},
             "n": r["n"]} for _, r in summary.iterrows()]
    return _table(rows)


SEMANTIC_TESTS = {"probing": "PEEK probing: similarity vs Wu-Palmer",
                  "dora": "DORA, output units: EA vs WordNet distance"}


def semantics_section(summary: pd.DataFrame) -> str:
    rows = [{"model": r["model"], "Mantel test": f"{SEMANTIC_TESTS.get(kind, kind)} ({what})",
             "r": _pm(r, "mantel_r", 3), "p": _pm(r, "mantel_p", 3), "n": r["n"]}
            for _, r in summary.iterrows() for kind, _, what in [str(r["what"]).partition(":")]]
    return _table(rows)


def semantic_depths_section(summary: pd.DataFrame) -> str:
    """From the deepest hypernym every class shares (where even a random naming is always right) down."""
    labels = {"accuracy_by_depth": "best match", "hungarian_accuracy_by_depth": "Hungarian",
              "chance_accuracy_by_depth": "random naming"}
    rows = []
    for _, group in summary.groupby(["model", "what"], sort=False):
        shared = (group["chance_accuracy_by_depth_mean"] >= 1 - 1e-9).to_numpy()
        start = max(0, int(shared.argmin()) - 1) if not shared.all() else len(group) - 1
        rows += [{"model": r["model"], "depth d": int(r["depth"]),
                  **{label: _pm(r, key, 2) for key, label in labels.items() if not pd.isna(r[f"{key}_mean"])},
                  "n": r["n"]} for _, r in group.iloc[start:].iterrows()]
    return _table(rows)


SECTIONS = {
    "ood": ("ood_summary.csv", ood_section),
    "ood_sets": ("ood_summary.csv", ood_sets_section),
    "prototypes": ("prototypes_summary.csv",
                   lambda s: report_section(s, {"target_accuracy": "target accuracy", "probe_accuracy": "probe accuracy"})),
    "probing": ("probing_summary.csv",
                lambda s: report_section(s, {"accuracy": "accuracy", "hungarian_accuracy": "Hungarian accuracy"})),
    "semantics": ("semantics_summary.csv", semantics_section),
    "semantic_depths": ("semantic_depths_summary.csv", semantic_depths_section),
}


def sections(results: Path) -> dict[str, str]:
    """Section name -> its markdown, for every summary file present under `results`."""
    out = {}
    for name, (file, render) in SECTIONS.items():
        path = results / file
        if path.exists():
            out[name] = render(pd.read_csv(path))
        else:
            print(f"readme_numbers: {path} missing: section {name!r} left as it is", file=sys.stderr)
    return out


def rewrite(text: str, new: dict[str, str], note: str = "") -> str:
    for name, body in new.items():
        pattern = re.compile(rf"(<!-- numbers:{name}:start -->\n).*?(<!-- numbers:{name}:end -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + (note + "\n" if note else "") + m.group(2), text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results", type=Path, help="the finished run's results folder")
    p.add_argument("--readme", default=RESULTS_PAGE, type=Path, help=f"the page to rewrite (default {RESULTS_PAGE})")
    p.add_argument("--command", default="", help="the command that produced the run (written under each table)")
    args = p.parse_args(argv)
    note = f"\n<sub>Generated by `{COMMAND}` from {args.command}.</sub>" if args.command else ""
    text = args.readme.read_text()
    with atomic_path(args.readme) as tmp:
        tmp.write_text(rewrite(text, sections(args.results), note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
