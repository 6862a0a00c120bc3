"""Figures of one OOD method's scores: ROC curves and score histograms, the ID set against every OOD set.

ROC: ID is the positive class (as for AUROC), x = OOD accepted (FPR), y = ID kept (TPR), both in percent; the
legend carries each OOD set's AUROC and FPR95 (peekflow.ood.metrics), a dotted line marks 95% TPR. Histograms: densities
over bins shared by every set, so the overlap reads directly. matplotlib's object API (Figure, Agg canvas): no pyplot
state, no display needed. PNGs are written atomically.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from peekflow.figures import save_figure
from peekflow.ood.metrics import ood_metrics


def plot_roc(scores: dict[str, np.ndarray], id_name: str, ood_names: list[str], path: str | os.PathLike,
             title: str = "", dpi: int = 120) -> None:
    """ROC curve of `id_name` against each OOD set in `ood_names` (scores: data set name -> 1-D scores)."""
    fig = Figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    s_id = np.asarray(scores[id_name], dtype=np.float64)
    for name in ood_names:
        s_ood = np.asarray(scores[name], dtype=np.float64)
        m = ood_metrics(s_id, s_ood)  # also validates the scores
        is_id = np.r_[np.ones(s_id.size), np.zeros(s_ood.size)]
        fpr, tpr, _ = roc_curve(is_id, np.r_[s_id, s_ood])
        ax.plot(100 * fpr, 100 * tpr, label=f"{name}: AUROC {m['auroc']:.1f}, FPR95 {m['fpr95']:.1f}")
    ax.plot([0, 100], [0, 100], ls="--", lw=0.8, color="grey")
    ax.axhline(95, ls=":", lw=0.8, color="grey")
    ax.set(xlim=(0, 100), ylim=(0, 100.5), xlabel="OOD accepted (FPR, %)", ylabel=f"ID kept: {id_name} (TPR, %)",
           title=title)
    ax.legend(loc="lower right", fontsize="small")
    save_figure(fig, path, dpi)


def plot_histograms(scores: dict[str, np.ndarray], id_name: str, ood_names: list[str], path: str | os.PathLike,
                    title: str = "", bins: int = 60, dpi: int = 120) -> None:
    """Score densities of the ID set (filled) and each OOD set (outlined) over `bins` shared bins."""
    if bins < 1:
        raise ValueError(f"plot: bins must be >= 1, got {bins}")
    names = [id_name, *ood_names]
    values = {name: np.asarray(scores[name], dtype=np.float64) for name in names}
    for name, s in values.items():
        if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
            raise ValueError(f"plot: scores of {name!r} must be a non-empty 1-D array of finite values")
    edges = np.histogram_bin_edges(np.concatenate(list(values.values())), bins=bins)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(values[id_name], bins=edges, density=True, histtype="stepfilled", alpha=0.35, color="grey",
            label=f"{id_name} (ID, n={values[id_name].size})")
    for name in ood_names:
        ax.hist(values[name], bins=edges, density=True, histtype="step", lw=1.5, label=f"{name} (n={values[name].size})")
    ax.set(xlabel="score (higher = more in-distribution)", ylabel="density", title=title)
    ax.legend(fontsize="small")
    save_figure(fig, path, dpi)
