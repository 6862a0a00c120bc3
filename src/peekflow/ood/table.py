"""The OOD table: one row per (method, OOD data set) plus an "average" row per method and, where the config groups the
OOD sets (ood.groups, e.g. near / far as in OpenOOD v1.5), an "average_<group>" row per group; metrics in percent.

Long form (CSV), columns:
  model, method, ood_dataset          the row's model, method (the name given for its score file) and OOD data set
  auroc, fpr95, fpr95_openood,        metrics (peekflow.ood.metrics has the exact definitions); fpr95 is the classic
  aupr_in, aupr_out                   figure of the PEEK / KNN / Energy papers (share of OOD accepted while 95% of ID
                                      is kept), fpr95_openood OpenOOD v1.5's (share of ID rejected at 95% OOD recall)
  n_id, n_ood                         sample counts
  auroc_lo, auroc_hi, fpr95_lo,       95% percentile-bootstrap confidence intervals (ID and OOD resampled
  fpr95_hi                            separately; empty when the bootstrap is off)
  k, bank, temperature, epsilon,      the method's settings as stored in its score file, empty where they do not
  setting                             apply: k for knn* and nnguide*, bank (the fitting data: fit store or prototypes)
                                      for fitted methods, T for energy/odin/gradnorm, eps for odin, `setting` the
                                      other settings the method sweeps (e.g. percentile=90); each the value used
                                      (ViM's dim null: the dimension its rule chose)
  notes                               the warnings its score file recorded while fitting and scoring (a covariance
                                      of too low rank, a bank smaller than the classes, ...) and the notes of its
                                      feature stores (the crop of a timm model's default preprocessing), joined by
                                      " | "; empty when there were none
The average row holds the mean of each metric over the OOD data sets, the common n_id and the summed n_ood; its CI
is the percentile interval of the per-resample mean (the OOD sets share the ID resamples); a group's row likewise
over the group's sets.

The markdown table is paper style: methods as rows, FPR95 / AUROC column pairs per OOD set, then each group's average
and the overall average; the methods' notes follow it as a list (a note of every method of a model once).
Scores: higher = more in-distribution (ID) for every method.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from peekflow.io import atomic_path, open_complete_h5
from peekflow.ood.metrics import BOOTSTRAP_KEYS, CI_KEYS, METRIC_KEYS, bootstrap_metrics, ood_metrics, percentile_ci
from peekflow.ood.scoring import read_notes, read_scores

SETTING_KEYS = ["k", "bank", "temperature", "epsilon", "setting"]
OWN_COLUMNS = {"k", "temperature", "epsilon"}  # swept settings with a column of their own
COLUMNS = ["model", "method", "ood_dataset", *METRIC_KEYS, "n_id", "n_ood", *CI_KEYS, *SETTING_KEYS, "notes"]
NOTE_SEPARATOR = " | "
AVERAGE = "average"
CONVENTIONS = (
    "Scores: higher = more in-distribution (ID) for every method; metrics in percent; AUROC takes ID as positive; "
    "the CSV beside this file adds 95% bootstrap CIs, AUPR-In/Out and fpr95_openood.  \n"
    "FPR95 is the CSV's fpr95: share of OOD accepted while 95% of ID is kept (PEEK/KNN/Energy papers), not "
    "fpr95_openood (OpenOOD v1.5: share of ID rejected at 95% OOD recall)."
)


def _detector(method: str):
    """The registered detector class of `method` (None for names the registry does not know)."""
    from peekflow.ood.base import detector_class

    try:
        return detector_class(method)
    except ValueError:
        return None


def method_settings(path: str | os.PathLike) -> dict:
    """k, bank, temperature, epsilon, setting of a score file's method (None where they do not apply): the values
    used, i.e. what its fit chose where a setting left it to a rule (the score file's `fitted`, e.g. ViM's dim)."""
    with open_complete_h5(path, "score file", "rerun its scoring") as h5:
        method = str(h5.attrs.get("method", ""))
        settings = {**json.loads(h5.attrs.get("settings", "{}")), **json.loads(h5.attrs.get("fitted", "{}"))}
        fit_store = str(h5.attrs.get("fit_store", ""))
    out = dict.fromkeys(SETTING_KEYS)
    cls = _detector(method)
    out["k"] = settings.get("k")
    if fit_store:  # the bank: the method's prototypes (knn_deepinversion), else the fit store (shapes_train), sampled?
        bank = (cls.prototype_bank if cls else None) or Path(fit_store).stem
        if settings.get("samples_per_class"):
            bank += f" ({settings['samples_per_class']}/class)"
        out["bank"] = bank
    out["temperature"] = settings.get("temperature")
    out["epsilon"] = settings.get("epsilon")
    swept = [key for key in (cls.sweeps if cls else ()) if key not in OWN_COLUMNS and key in settings]
    out["setting"] = ", ".join(f"{key}={settings[key]:g}" if isinstance(settings[key], float)
                               else f"{key}={settings[key]}" for key in swept) or None
    return out


def build_table(score_files: dict[str, str | os.PathLike], id_name: str, ood_names: list[str],
                n_bootstrap: int = 1000, seed: int = 0, groups: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Metrics of every method (score file) against every OOD data set, ID = data set `id_name`.

    Keys of `score_files` are `<model>/<method>` (or `<method>`: model left empty). `n_bootstrap` resamples (0: none,
    CI columns empty) seeded by `seed` give the confidence intervals; every model's rows use the same resamples.
    `groups` (name -> OOD sets) add an average_<name> row per method after the per-set rows, before the overall
    average.
    """
    groups = groups or {}
    for group, names in groups.items():
        if not names or not set(names) <= set(ood_names):
            raise ValueError(f"table: group {group!r} must name some of the OOD data sets {ood_names}, got {names}")
    if not score_files:
        raise ValueError("table: no score files given")
    if not ood_names:
        raise ValueError("table: no OOD data sets given")
    if id_name in ood_names or len(set(ood_names)) != len(ood_names):
        raise ValueError(f"table: OOD data sets {ood_names} must be distinct and exclude the ID set {id_name!r}")
    if n_bootstrap < 0:
        raise ValueError(f"table: n_bootstrap must be >= 0, got {n_bootstrap}")
    rows = []
    for key, path in score_files.items():
        model, _, method = key.rpartition("/")
        scores = read_scores(path, [id_name, *ood_names])
        settings = {**method_settings(path), "notes": NOTE_SEPARATOR.join(read_notes(path)) or None}
        per_set, resamples = [], []
        for stream, name in enumerate(ood_names):
            row = {"model": model, "method": method, "ood_dataset": name, **ood_metrics(scores[id_name], scores[name]),
                   **settings}
            if n_bootstrap:
                resamples.append(bootstrap_metrics(scores[id_name], scores[name], n_bootstrap, seed, stream))
                row.update(_intervals(resamples[-1]))
            per_set.append(row)
        averages = [_average(per_set, resamples, f"{AVERAGE}_{group}", [ood_names.index(n) for n in names])
                    for group, names in groups.items()]
        rows += [*per_set, *averages, _average(per_set, resamples, AVERAGE, range(len(per_set)))]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["k"] = df["k"].astype("Int64")  # integer where given, empty elsewhere
    return df


def _average(per_set: list[dict], resamples: list[dict], name: str, which) -> dict:
    """The row `name` averaging the rows `which` of `per_set` (and their bootstrap resamples, if any)."""
    rows = [per_set[i] for i in which]
    average = {**rows[0], "ood_dataset": name, **{key: sum(r[key] for r in rows) / len(rows) for key in METRIC_KEYS},
               "n_ood": sum(r["n_ood"] for r in rows)}
    if resamples:
        average.update(_intervals({key: np.mean([resamples[i][key] for i in which], axis=0)
                                   for key in BOOTSTRAP_KEYS}))
    return average


def _intervals(resamples: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for key in BOOTSTRAP_KEYS:
        out[f"{key}_lo"], out[f"{key}_hi"] = percentile_ci(resamples[key])
    return out


def _settings_label(row) -> str:
    names = {"k": "k", "bank": "bank", "temperature": "T", "epsilon": "eps", "setting": ""}
    return ", ".join(f"{names[key]}={row[key]:g}" if isinstance(row[key], float) else
                     f"{names[key]}={row[key]}" if names[key] else row[key]
                     for key in SETTING_KEYS if not pd.isna(row[key]))


def paper_table(df: pd.DataFrame) -> pd.DataFrame:
    """Methods as rows (per model, with a model column when there are several); per OOD set (in table order) an
    FPR95 and an AUROC column, then the group averages, the overall average last."""
    sets = list(dict.fromkeys(df.ood_dataset))
    sets = [s for s in sets if s != AVERAGE] + [AVERAGE]  # average_<group> rows already follow the sets
    by_row = df.set_index(["model", "method", "ood_dataset"])
    several = df.model.nunique() > 1
    rows = []
    for model, method in dict.fromkeys(zip(df.model, df.method)):
        first = by_row.loc[(model, method, sets[0])]
        row = {"model": model} if several else {}
        row.update(method=method, settings=_settings_label(first))
        for name in sets:
            row[f"{name} FPR95↓"] = by_row.loc[(model, method, name), "fpr95"]
            row[f"{name} AUROC↑"] = by_row.loc[(model, method, name), "auroc"]
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(df: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike | None = None) -> None:
    """Write the long table as CSV and (optionally) the paper-style markdown table; metrics rounded to 2 decimals."""
    rounded = df.round({key: 2 for key in [*METRIC_KEYS, *CI_KEYS]})
    with atomic_path(csv_path) as tmp:
        rounded.to_csv(tmp, index=False)
    if md_path is not None:
        markdown = paper_table(rounded).to_markdown(index=False, floatfmt=".2f")
        with atomic_path(md_path) as tmp:
            tmp.write_text(CONVENTIONS + "\n\n" + markdown + "\n" + _notes_list(df))


def _notes_list(df: pd.DataFrame) -> str:
    """The methods' notes as a markdown list under the table ("" when there are none); a note of every method of a
    model (its stores': e.g. the crop of a timm model's default preprocessing) once."""
    lines = []
    several = df.model.nunique() > 1
    for model, rows in df.groupby("model", sort=False, dropna=False):
        notes = {method: [] if pd.isna(group.iloc[0]) else group.iloc[0].split(NOTE_SEPARATOR)
                 for method, group in rows.groupby("method", sort=False)["notes"]}
        shared = [n for n in next(iter(notes.values())) if len(notes) > 1 and all(n in ns for ns in notes.values())]
        lines += [f"- every method{f' of {model}' if model and several else ''}: {note}" for note in shared]
        for method, these in notes.items():
            name = f"{model}/{method}" if model and several else method
            lines += [f"- {name}: {note.removeprefix(f'{method}: ')}" for note in these if note not in shared]
    if not lines:
        return ""
    return "\n**Notes** (recorded while extracting, fitting and scoring):\n\n" + "\n".join(lines) + "\n"
