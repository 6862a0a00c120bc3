"""Class semantics on disk (results/semantics/<model>/): the class -> synset table, the class x class matrices as
CSV (rows and columns: the classes, in class order) and a figure of them in hierarchy order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from peekflow.io import atomic_path
from peekflow.semantics.hierarchy import ClassSemantics, tree_order

MATRICES = {"distance": "WordNet distance (edges)", "wup": "Wu-Palmer similarity", "lcs_depth": "depth of the LCS"}


def synset_table(classes: list[str], synsets) -> pd.DataFrame:
    return pd.DataFrame({"class": classes, "synset": [s.name() for s in synsets],
                         "wnid": [f"n{s.offset():08d}" for s in synsets], "depth": [s.min_depth() for s in synsets],
                         "definition": [s.definition() for s in synsets]})


def _write_csv(frame: pd.DataFrame, path: Path, **kwargs) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def write_class_semantics(folder: str | os.PathLike, classes: list[str], synsets, semantics: ClassSemantics) -> None:
    """synsets.csv, distance.csv, wup.csv, lcs_depth.csv and matrices.png in `folder`."""
    folder = Path(folder)
    _write_csv(synset_table(classes, synsets), folder / "synsets.csv", index=False)
    for name in MATRICES:
        frame = pd.DataFrame(getattr(semantics, name), index=pd.Index(classes, name="class"), columns=classes)
        _write_csv(frame, folder / f"{name}.csv", float_format="%.6g")
    plot_class_semantics(folder / "matrices.png", classes, synsets, semantics)


def plot_class_semantics(path, classes: list[str], synsets, semantics: ClassSemantics, title: str = "") -> None:
    """Distance and Wu-Palmer similarity side by side, classes in depth-first order of the hierarchy; class names on
    the axes where there are at most 40."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peekflow.figures import save_figure

    order = tree_order(synsets)
    k = len(classes)
    side = min(max(3.0, 0.22 * k), 9.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 2.5, side + 1.2), constrained_layout=True)
    for ax, name, cmap in zip(axes, ["distance", "wup"], ["viridis_r", "viridis"]):
        im = ax.imshow(getattr(semantics, name)[np.ix_(order, order)], cmap=cmap, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label=MATRICES[name])
        if k <= 40:
            labels = [classes[i] for i in order]
            ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(k), labels, fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{k} classes, hierarchy order")
    fig.suptitle(title or f"WordNet 3.0 semantics of {k} classes")
    save_figure(fig, path)
    plt.close(fig)
