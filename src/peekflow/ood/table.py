"""The OOD table: one row per (method, OOD data set) plus an "average" row per method, metrics in percent.

Columns: method, ood_dataset, auroc, fpr95, fpr95_openood, aupr_in, aupr_out, n_id, n_ood.
Scores: higher = more in-distribution (ID) for every method. fpr95 is the classic figure of the PEEK / KNN / Energy
papers (share of OOD accepted while 95% of ID is kept); fpr95_openood is OpenOOD v1.5's (share of ID rejected at
95% OOD recall). See peekflow.metrics for the exact definitions. The average row holds the mean of each metric over
the OOD data sets, the common n_id and the summed n_ood.
"""

from __future__ import annotations

import os

import pandas as pd

from peekflow.io import atomic_path
from peekflow.metrics import METRIC_KEYS, ood_metrics
from peekflow.ood.scoring import read_scores

COLUMNS = ["method", "ood_dataset", *METRIC_KEYS, "n_id", "n_ood"]
AVERAGE = "average"
CONVENTIONS = (
    "Scores: higher = more in-distribution (ID) for every method; metrics in percent; AUROC and AUPR-In take ID as "
    "positive, AUPR-Out takes OOD as positive.  \n"
    "fpr95: share of OOD accepted while 95% of ID is kept (PEEK/KNN/Energy papers); "
    "fpr95_openood: share of ID rejected at 95% OOD recall (OpenOOD v1.5)."
)


def build_table(score_files: dict[str, str | os.PathLike], id_name: str, ood_names: list[str]) -> pd.DataFrame:
    """Metrics of every method (score file) against every OOD data set, ID = data set `id_name`."""
    if not score_files:
        raise ValueError("table: no score files given")
    if not ood_names:
        raise ValueError("table: no OOD data sets given")
    if id_name in ood_names or len(set(ood_names)) != len(ood_names):
        raise ValueError(f"table: OOD data sets {ood_names} must be distinct and exclude the ID set {id_name!r}")
    rows = []
    for method, path in score_files.items():
        scores = read_scores(path, [id_name, *ood_names])
        per_set = [{"method": method, "ood_dataset": name, **ood_metrics(scores[id_name], scores[name])}
                   for name in ood_names]
        rows += per_set
        mean = {key: sum(r[key] for r in per_set) / len(per_set) for key in METRIC_KEYS}
        rows.append({"method": method, "ood_dataset": AVERAGE, **mean,
                     "n_id": per_set[0]["n_id"], "n_ood": sum(r["n_ood"] for r in per_set)})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_table(df: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike | None = None) -> None:
    """Write the table as CSV and (optionally) markdown with the conventions above it; metrics rounded to 2 decimals."""
    rounded = df.round({key: 2 for key in METRIC_KEYS})
    with atomic_path(csv_path) as tmp:
        rounded.to_csv(tmp, index=False)
    if md_path is not None:
        with atomic_path(md_path) as tmp:
            tmp.write_text(CONVENTIONS + "\n\n" + rounded.to_markdown(index=False, floatfmt=".2f") + "\n")
