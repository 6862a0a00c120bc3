"""Published OOD tables as data, and a run's table set beside them (`peekflow compare`, rule compare_with_papers).

A published table is a YAML file in peekflow/ood/published/ (its name is the paper's key): a title, its source and
version, the values' `columns` (fpr95, fpr95_openood, auroc: the run's column each is set beside), the `groups` of
data sets it averages (`average`: the run's average row; any other name g: the run's average_g row) and `rows`:
a peekflow method name, the settings it was published with (none: every run of the method matches), per data set
or group its values, and a note.

The comparison has one row per published value and matching run (model, run name): the run's value and its 95%
bootstrap interval, run - published, and whether the published value lies inside that interval. A published value
no run matches is listed as "not in the run" (no run of that method and settings, or no such data set), and a run
(or one of its data sets) that a paper does not publish as "not in the paper": nothing is dropped.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from peekflow.io import atomic_path
from peekflow.settings import required, setting

PUBLISHED = Path(__file__).resolve().parent / "published"
CI = {"auroc": ("auroc_lo", "auroc_hi"), "fpr95": ("fpr95_lo", "fpr95_hi")}  # run columns with a bootstrap interval
COLUMNS = ["paper", "model", "method", "published_method", "published_settings", "ood_dataset", "published_set",
           "metric", "published", "run", "difference", "run_lo", "run_hi", "inside_ci", "status", "note"]
COMPARED, NOT_IN_RUN, NOT_IN_PAPER = "compared", "not in the run", "not in the paper"


@dataclass
class CompareSettings:
    """What `ood.compare` sets beside the run's table."""

    papers: list[str] = required("published tables to set the run beside (peekflow/ood/published/<name>.yaml: "
                                 "peek_imagenet_resnet50, openood_v15_imagenet_resnet50)")
    sets: dict = setting({}, "a published data set or group name -> this config's name for it, where they differ")

    def __post_init__(self):
        unknown = [p for p in self.papers if p not in known_papers()]
        if unknown or not self.papers:
            raise ValueError(f"papers: no published table {unknown or self.papers}; known: {known_papers()}")


def known_papers() -> list[str]:
    return sorted(p.stem for p in PUBLISHED.glob("*.yaml"))


def load_paper(name: str) -> dict:
    """The published table `name`; fail naming the known ones."""
    path = PUBLISHED / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"compare: no published table {name!r}; known: {known_papers()}")
    paper = yaml.safe_load(path.read_text())
    for i, row in enumerate(paper["rows"]):
        for values in row["sets"].values():
            if len(values) != len(paper["columns"]):
                raise ValueError(f"{path}: row {i} ({row['method']}): {values} does not match columns "
                                 f"{paper['columns']}")
    return paper


def _matches(published: dict, settings: dict) -> bool:
    """A run's settings agree with every setting the paper gives (numbers to relative 1e-9)."""
    for key, want in published.items():
        have = settings.get(key)
        if isinstance(want, (int, float)) and isinstance(have, (int, float)) and not isinstance(have, bool):
            if not math.isclose(want, have, rel_tol=1e-9):
                return False
        elif have != want:
            return False
    return True


def _label(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def compare(table: pd.DataFrame, runs: dict[str, tuple[str, dict]], papers: list[str], sets: dict | None = None,
            groups: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The comparison (COLUMNS) of `table` (the OOD table's rows) with each of `papers`.

    `runs`: the table's method column (a run name) -> (registered method, settings as scored). `sets`: a published
    data set or group name -> the run's name for it. `groups`: the run's groups of OOD sets (ood.groups), so that a
    published group average is set beside the run's only where both average the same sets."""
    sets, groups = dict(sets or {}), dict(groups or {})
    run_sets = [s for s in dict.fromkeys(table.ood_dataset) if s != "average" and not s.startswith("average_")]
    groups.setdefault("average", run_sets)
    by_row = table.set_index(["model", "method", "ood_dataset"])
    models = list(dict.fromkeys(table.model.fillna("")))
    out = []
    for name in papers:
        paper = load_paper(name)
        matched: set[tuple[str, str]] = set()
        for row in paper["rows"]:
            wanted = row.get("settings") or {}
            matching = [run for run, (method, settings) in runs.items()
                        if method == row["method"] and _matches(wanted, settings)]
            base = {"paper": name, "published_method": row["method"], "published_settings": _label(wanted),
                    "note": row.get("note")}
            for published_set, values in row["sets"].items():
                target, note = _run_set(paper, published_set, sets, groups)
                for metric, value in zip(paper["columns"], values):
                    if value is None:
                        continue
                    item = {**base, "published_set": published_set, "ood_dataset": target, "metric": metric,
                            "published": float(value)}
                    if not matching:
                        out.append({**item, "status": NOT_IN_RUN,
                                    "note": _join(f"no run of {row['method']}" + (f" with {_label(wanted)}"
                                                                                  if wanted else ""), base["note"])})
                    for model in models:
                        for run in matching:
                            matched.add((model, run))
                            out.append(_set_beside(item, by_row, model, run, target, _join(note, base["note"])))
        out += _unpublished(name, paper, table, runs, matched, sets, groups)
    return pd.DataFrame(out, columns=COLUMNS)


def _run_set(paper: dict, published_set: str, sets: dict, groups: dict) -> tuple[str, str | None]:
    """The run's table row for a published data set or group, and a note where the two differ in what they hold."""
    if published_set not in paper.get("groups", {}):
        return sets.get(published_set, published_set), None
    mine = sets.get(published_set, published_set)
    target = "average" if mine == "average" else f"average_{mine}"
    want = sorted(sets.get(s, s) for s in paper["groups"][published_set])
    have = sorted(groups.get(mine, []))
    if have and have != want:
        return target, f"the run's {target} averages {have}, the paper's {published_set} {want}"
    return target, None


def _set_beside(item: dict, by_row: pd.DataFrame, model: str, run: str, target: str, note: str | None) -> dict:
    item = {**item, "model": model, "method": run}
    key = (model, run, target)
    if key not in by_row.index:
        return {**item, "status": NOT_IN_RUN, "note": _join(f"the run has no row {target!r}", note)}
    row = by_row.loc[key]
    value = float(row[item["metric"]])
    lo, hi = (float(row[c]) if not pd.isna(row[c]) else None for c in CI[item["metric"]]) \
        if item["metric"] in CI else (None, None)
    inside = None if lo is None else bool(lo <= item["published"] <= hi)
    return {**item, "run": value, "difference": value - item["published"], "run_lo": lo, "run_hi": hi,
            "inside_ci": inside, "status": COMPARED, "note": note}


def _unpublished(name: str, paper: dict, table: pd.DataFrame, runs: dict, matched: set, sets: dict,
                 groups: dict) -> list[dict]:
    """Rows of the run's table that `paper` does not publish: a run of a method it lacks (one row), or a data set of
    a matched run that the paper does not give for that method."""
    published_sets: dict[str, set] = {}
    published_settings: dict[str, list] = {}
    for row in paper["rows"]:
        published_sets.setdefault(row["method"], set()).update(_run_set(paper, s, sets, groups)[0] for s in row["sets"])
        published_settings.setdefault(row["method"], []).append(_label(row.get("settings") or {}))
    out = []
    for model, run in dict.fromkeys(zip(table.model.fillna(""), table.method)):
        method = runs.get(run, (run, {}))[0]
        base = {"paper": name, "model": model, "method": run, "status": NOT_IN_PAPER}
        if (model, run) not in matched:
            out.append({**base, "note": f"{name} publishes no {method}" if method not in published_sets else
                        f"{name} publishes {method} only with " + " / ".join(published_settings[method])})
            continue
        for ood_dataset in table[(table.model.fillna("") == model) & (table.method == run)].ood_dataset:
            if ood_dataset not in published_sets[method]:
                out.append({**base, "ood_dataset": ood_dataset, "note": f"{name} gives no {ood_dataset} for {method}"})
    return out


def _join(*notes) -> str | None:
    return "; ".join(n for n in notes if n) or None


def write_comparison(df: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike) -> None:
    """The comparison as CSV (every row) and markdown: per paper its source, the values set beside each other, then
    what only one side has."""
    rounded = df.round({c: 2 for c in ("published", "run", "difference", "run_lo", "run_hi")})
    with atomic_path(csv_path) as tmp:
        rounded.to_csv(tmp, index=False)
    parts = ["Run - published, per published value; `inside` is whether the published value lies inside the run's "
             "95% bootstrap interval (empty where the run has none). Metrics in percent."]
    for name, rows in rounded.groupby("paper", sort=False):
        paper = load_paper(name)
        parts.append(f"## {paper['title']}\n\nSource: {' '.join(paper['source'].split())}")
        shown = rows[rows.status == COMPARED].assign(
            interval=lambda d: [f"[{lo:.2f}, {hi:.2f}]" if not pd.isna(lo) else "" for lo, hi in zip(d.run_lo, d.run_hi)],
            inside=lambda d: [{True: "yes", False: "no"}.get(v, "") for v in d.inside_ci],
            note=lambda d: d.note.fillna(""))
        if len(shown):
            parts.append(shown[["model", "method", "ood_dataset", "metric", "published", "run", "interval", "difference",
                                "inside", "note"]].to_markdown(index=False, floatfmt=".2f"))
        for status in (NOT_IN_RUN, NOT_IN_PAPER):
            lines = [_line(r) for r in rows[rows.status == status].itertuples()]
            if lines:
                parts.append(f"**{status.capitalize()}**:\n\n" + "\n".join(dict.fromkeys(lines)))
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n\n".join(parts) + "\n")


def _line(r) -> str:
    what = r.method if isinstance(r.method, str) else f"{r.published_method} ({r.published_settings})".replace(" ()", "")
    where = r.ood_dataset if isinstance(r.ood_dataset, str) else ""
    value = f" {r.metric} {r.published:.2f}" if not pd.isna(r.published) else ""
    return f"- {what}{' on ' + where if where else ''}{value}: {r.note}"
