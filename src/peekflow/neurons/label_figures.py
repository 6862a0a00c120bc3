"""Figures of the neuron labels: DORA's map of neurons with its outliers, INVERT's best-labelled neurons.

matplotlib's object API (Figure, Agg canvas): no pyplot state, no display needed; PNGs are written atomically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from peekflow.figures import save_figure

if TYPE_CHECKING:  # a hint only: importing dora loads torch, which `peekflow invert` never needs
    from peekflow.neurons.dora import DoraResult


def plot_dora(path, r: DoraResult, title: str = "", top: int = 8) -> None:
    """Left: the activated neurons on a 2-D map of the extreme-activation distance, outliers in red, the `top` most
    outlying numbered. Right: the first s-AMS of each of those `top` neurons with its LOF score."""
    ranked = np.flatnonzero(r.activated)
    order = ranked[np.argsort(r.rank[ranked])][:top]
    top = len(order)
    fig = Figure(figsize=(11, 5), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.1, 1])
    ax = left.add_subplot()
    ax.scatter(*r.coords[~r.outlier].T, s=18, color="tab:blue", label="neuron")
    ax.scatter(*r.coords[r.outlier].T, s=30, color="tab:red", label="LOF outlier")
    for i in order:
        ax.annotate(str(r.neurons[i]), r.coords[i], fontsize=8, xytext=(3, 3), textcoords="offset points")
    left_out = int((~r.activated).sum())
    ax.set(xlabel="MDS 1", ylabel="MDS 2", title=title or "DORA: neurons by extreme-activation distance")
    if left_out:
        ax.text(0.01, 0.01, f"{left_out} neuron(s) not activated by their s-AMS: not shown", fontsize=8,
                transform=ax.transAxes)
    ax.legend(loc="best", fontsize="small")
    per_neuron = len(r.images) // len(r.neurons)
    ncol = min(4, top)
    axes = right.subplots(int(np.ceil(top / ncol)), ncol, squeeze=False)
    for k, a in enumerate(axes.flat):
        a.set_axis_off()
        if k < top:
            i = order[k]
            a.imshow(np.clip(r.images[i * per_neuron].transpose(1, 2, 0), 0, 1))
            a.set_title(f"#{k + 1} n{r.neurons[i]} LOF {r.scores[i]:.2f}", fontsize=8,
                        color="tab:red" if r.outlier[i] else "black")
    right.suptitle("s-AMS of the most outlying neurons", fontsize=10)
    save_figure(fig, path)


def plot_invert(path, table: pd.DataFrame, title: str = "", top: int = 20) -> None:
    """Left: AUC bars of the `top` best-labelled neurons, each named by its formula and AUC. Right: the AUCs of all
    neurons (green: Mann-Whitney p < 0.001)."""
    best = table.sort_values(["auc", "neuron"], ascending=[False, True]).head(top).iloc[::-1]
    fig = Figure(figsize=(12, 1.4 + 0.3 * len(best)), layout="constrained")
    ax, hist = fig.subplots(1, 2, width_ratios=[2.2, 1])
    colours = ["tab:green" if p < 0.001 else "tab:grey" for p in best["p_value"]]
    y = np.arange(len(best))
    ax.barh(y, best["auc"], color=colours)
    for yi, auc in zip(y, best["auc"]):
        ax.text(auc, yi, f" {auc:.3f}", va="center", fontsize=7)
    names = [f"n{n}: {f}" if len(f) <= 60 else f"n{n}: {f[:57]}..." for n, f in zip(best["neuron"], best["formula"])]
    ax.set_yticks(y, names, fontsize=8)
    low = min(0.5, float(table["auc"].min()))
    ax.set(xlim=(low, 1.06), xlabel="AUC", title=title or f"INVERT: the {len(best)} best-labelled neurons")
    edges = np.linspace(low, 1.0, 26)
    significant = table["p_value"] < 0.001
    hist.hist([table["auc"][significant], table["auc"][~significant]], bins=edges, stacked=True,
              color=["tab:green", "tab:grey"], label=["p < 0.001", "p >= 0.001"])
    hist.set(xlabel="AUC of the neuron's formula", ylabel="neurons", title=f"all {len(table)} neurons")
    hist.legend(fontsize="small", loc="upper left")
    save_figure(fig, path)
