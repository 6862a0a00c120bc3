"""Summaries over replicas (training seeds, or several checkpoints of one architecture; peekflow.workflow.replicas): the
mean, the standard deviation (n - 1 in the denominator; empty for one replica) and n of every metric, per base model.

- `ood_summary`: from the OOD table, per (model, method, OOD set or average row).
- `report_summary`: from per-replica JSON reports (prototype quality `<method>_quality.json`, probing
  `probing.json`, the judgements against WordNet), per (model, what) for the given numeric keys.
- `curve_summary`: from per-replica JSON reports that hold curves (lists) over an index list (probing's accuracy by
  hypernym depth in `semantics.json`), per (model, what, index value).
The markdown shows `mean ± std (n)`. A single run's bootstrap intervals stay in the OOD table; these are the spread
over independently trained models, which is what differs between machines (OpenOOD v1.5 reports three checkpoints).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from peekflow.io import atomic_path
from peekflow.ood.metrics import METRIC_KEYS

SEP = "@"  # a replica's name: <model>@s<seed> or <model>@r<i> (peekflow.workflow.replicas names them)
PROTOTYPE_KEYS = ["target_accuracy", "probe_accuracy"]
PROBING_KEYS = ["accuracy", "hungarian_accuracy"]


def base(name: str) -> str:
    """The model a replica belongs to (a model without replicas: its own name)."""
    return name.split(SEP, 1)[0]


def _spread(df: pd.DataFrame, keys: list[str], by: list[str]) -> pd.DataFrame:
    grouped = df.groupby(by, sort=False)
    out = grouped.size().rename("n").reset_index()
    for key in keys:
        stats = grouped[key].agg(["mean", "std"]).reset_index(drop=True)
        out[f"{key}_mean"], out[f"{key}_std"] = stats["mean"].to_numpy(), stats["std"].to_numpy()
    return out


def ood_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The OOD table's rows grouped over the replicas of each model."""
    df = table.assign(replica=table.model, model=table.model.map(base))
    summary = _spread(df, list(METRIC_KEYS), ["model", "method", "ood_dataset"])
    replicas = df.groupby(["model", "method", "ood_dataset"], sort=False).replica.agg(" ".join)
    return summary.assign(replicas=replicas.to_numpy())


def report_summary(reports: dict[str, str | os.PathLike], keys: list[str]) -> pd.DataFrame:
    """`reports`: `<replica>/<what>` -> JSON report path; grouped over the replicas of each model, per `what`."""
    rows = []
    for name, path in reports.items():
        replica, _, what = name.rpartition("/")
        data = json.loads(Path(path).read_text())
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"summary: {path} has no {missing}; it has {sorted(data)}")
        rows.append({"model": base(replica), "what": what, "replica": replica, **{k: data[k] for k in keys}})
    df = pd.DataFrame(rows)
    replicas = df.groupby(["model", "what"], sort=False).replica.agg(" ".join)
    return _spread(df, keys, ["model", "what"]).assign(replicas=replicas.to_numpy())


def curve_summary(reports: dict[str, str | os.PathLike], index: str, column: str, keys: list[str]) -> pd.DataFrame:
    """`reports` as for report_summary, each with a list `index` (e.g. depths) and lists `keys` of the same length
    (curves over it): grouped over the replicas of each model, per `what` and value of the index (the `column`). A
    curve a report lacks (e.g. the Hungarian one, where units outnumber classes) counts as missing (NaN)."""
    rows = []
    for name, path in reports.items():
        replica, _, what = name.rpartition("/")
        data = json.loads(Path(path).read_text())
        if index not in data:
            raise ValueError(f"summary: {path} has no {index!r}; it has {sorted(data)}")
        for i, value in enumerate(data[index]):
            rows.append({"model": base(replica), "what": what, column: value, "replica": replica,
                         **{k: data[k][i] if k in data else float("nan") for k in keys}})
    df = pd.DataFrame(rows)
    replicas = df.groupby(["model", "what", column], sort=False).replica.agg(" ".join)
    return _spread(df, keys, ["model", "what", column]).assign(replicas=replicas.to_numpy())


def _cell(row, key: str, digits: int) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")


def markdown(summary: pd.DataFrame, keys: list[str], digits: int = 2) -> str:
    """One row per group: its labels, `mean ± std` per key, n."""
    labels = [c for c in summary.columns if c not in {"n", "replicas"} and not c.endswith(("_mean", "_std"))]
    rows = [{**{c: row[c] for c in labels}, **{k: _cell(row, k, digits) for k in keys}, "n": row["n"]}
            for _, row in summary.iterrows()]
    return pd.DataFrame(rows).to_markdown(index=False) + "\n"


def write_summary(summary: pd.DataFrame, keys: list[str], csv_path, md_path, digits: int = 2) -> None:
    with atomic_path(csv_path) as tmp:
        summary.round(4).to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text("Mean ± standard deviation over replicas (training seeds or checkpoints), n replicas.\n\n"
                       + markdown(summary, keys, digits))
