"""Class semantics on disk (results/semantics/<model>/): the class -> synset table, the class x class matrices as
CSV (rows and columns: the classes, in class order) and a figure of them in hierarchy order. `map_classes` makes them
from class names (`peekflow semantics`); `read_synsets` and `semantics_of` read the table back for the judgements of
probing and DORA, which recompute the matrices from the synsets (exact, where the CSVs are rounded)."""

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


def map_classes(folder, classes: list[str], synsets_map: dict | None = None, wordnet_folder=None,
                model: str = "") -> ClassSemantics:
    """The WordNet 3.0 synset of every class (wnid names, or `synsets_map`: semantics.synsets) and their matrices,
    written to `folder` (write_class_semantics); SemanticsError names every class that has none."""
    from peekflow.semantics.hierarchy import class_semantics
    from peekflow.semantics.wordnet import class_synsets, open_wordnet

    wordnet = open_wordnet(wordnet_folder)
    mapped = {name: synset for name, synset in (synsets_map or {}).items() if name in classes}
    synsets = class_synsets(wordnet, classes, mapped, classes_key=f"the classes of {model or 'the model'}")
    semantics = class_semantics(synsets)
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_class_semantics(folder, classes, synsets, semantics)
    return semantics


def read_synsets(path) -> dict[str, str]:
    """synsets.csv -> class name -> synset name, in the file's (the model's class) order."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(table.columns[:2]) != ["class", "synset"]:
        raise ValueError(f"{path} is not a class semantics table (columns class, synset, ...): {list(table.columns)}")
    return dict(zip(table["class"], table["synset"]))


def semantics_of(classes: list[str], synsets_csv, wordnet_folder=None) -> ClassSemantics:
    """The WordNet matrices of `classes` (in that order), each class's synset read from `synsets_csv`."""
    from peekflow.semantics.hierarchy import class_semantics
    from peekflow.semantics.wordnet import open_wordnet, synset_from_name

    known = read_synsets(synsets_csv)
    missing = [c for c in classes if c not in known]
    if missing:
        raise ValueError(f"{synsets_csv} maps no synset to the classes {missing[:10]}")
    wordnet = open_wordnet(wordnet_folder)
    return class_semantics([synset_from_name(wordnet, known[c]) for c in classes])


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
