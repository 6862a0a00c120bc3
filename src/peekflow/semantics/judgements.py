"""PEEK probing and DORA's output units judged against WordNet, from their result files (peekflow.semantics.evaluation
holds the measures; the class synsets come from results/semantics/<model>/synsets.csv).

- `judge_probing`: from a probing's similarity.csv (units x the probe's known classes) and probing.json (each unit's
  true class and its best and Hungarian match): accuracy by hypernym depth and mean WordNet distance of both namings,
  with the chance level of a random naming (the same for an independent and a one-to-one one), and the Mantel test of
  the similarity against Wu-Palmer similarity over pairs of units.
- `judge_dora`: from DORA's signal file of the output layer (unit u = class u of the model): the Mantel test of the
  EA distance of the units whose s-AMS raised them against their WordNet distance (Bykov et al. 2023's evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from peekflow.semantics.evaluation import accuracy_by_depth, dora_mantel, mean_distance, probing_mantel, probing_report
from peekflow.semantics.files import read_synsets, semantics_of


def _mantel(result) -> dict:
    return {"mantel": result.to_dict(), "mantel_r": result.r, "mantel_p": result.p}


def judge_probing(similarity_csv, probing_json, synsets_csv, permutations: int = 999, seed: int = 0,
                  wordnet_folder=None) -> dict:
    """The report of semantics.json (see the module docstring)."""
    similarity = pd.read_csv(similarity_csv, index_col="unit")
    probing = json.loads(Path(probing_json).read_text())
    classes = [str(c) for c in similarity.columns]
    units = [str(u) for u in similarity.index]
    if sorted(units) != sorted(probing["units"]):
        raise ValueError(f"{similarity_csv} and {probing_json} list other units: {units[:5]} / "
                         f"{list(probing['units'])[:5]}")
    index = {c: i for i, c in enumerate(classes)}
    rows = [probing["units"][u] for u in units]
    absent = sorted({r["true_class"] for r in rows} - set(index))
    if absent:
        raise ValueError(f"{similarity_csv}: the known classes lack the true classes {absent[:10]}")
    truth = np.array([index[r["true_class"]] for r in rows])
    best = np.array([index[r["best_match"]] for r in rows])
    semantics = semantics_of(classes, synsets_csv, wordnet_folder)
    report = probing_report(semantics, best, truth)
    if all(r.get("hungarian_match") in index for r in rows):  # every unit matched one-to-one (units <= classes)
        hungarian = np.array([index[r["hungarian_match"]] for r in rows])
        report["hungarian_accuracy_by_depth"] = accuracy_by_depth(semantics, hungarian, truth,
                                                                  report["depths"]).tolist()
        report["hungarian_mean_distance"] = mean_distance(semantics, hungarian, truth)
    mantel = probing_mantel(semantics, similarity.to_numpy(np.float64), truth, permutations, seed)
    return {"model": probing.get("model"), "probe_layer": probing.get("probe_layer"), "similarity": str(similarity_csv),
            "synsets": str(synsets_csv), "accuracy": probing["accuracy"],
            "hungarian_accuracy": probing["hungarian_accuracy"], **report, **_mantel(mantel),
            "classes": dict(zip(classes, semantics.synsets)), "depth_of_true_class": semantics.depth[truth].tolist()}


def judge_dora(signals_h5, synsets_csv, permutations: int = 999, seed: int = 0, wordnet_folder=None) -> dict:
    """The report of dora_wordnet.json (see the module docstring)."""
    from peekflow.neurons.dora import ea_distance
    from peekflow.neurons.dora_shards import read_signals

    signals, settings = read_signals(signals_h5)
    classes = list(read_synsets(synsets_csv))
    width = signals.representations.shape[1]
    if width != len(classes):
        raise ValueError(f"{signals_h5}: layer {settings.get('layer')!r} has {width} units, but the model has "
                         f"{len(classes)} classes: semantics.output_layer must be the layer whose units are the "
                         "classes")
    units = signals.neurons[signals.activated]
    semantics = semantics_of(classes, synsets_csv, wordnet_folder)
    mantel = dora_mantel(semantics, ea_distance(signals.representations[signals.activated]), units, permutations, seed)
    return {"model": settings.get("model"), "layer": settings.get("layer"), "signals": str(signals_h5),
            "synsets": str(synsets_csv), "units": units.tolist(), "classes": [classes[u] for u in units],
            "left_out": signals.neurons[~signals.activated].tolist(), **_mantel(mantel)}


def plot_probing_judgement(path, report: dict, title: str = "") -> None:
    """Accuracy by hypernym depth of the best and the Hungarian match, and the chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peekflow.figures import save_figure

    d = report["depths"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    ax.plot(d, report["accuracy_by_depth"], "o-", label=f"best match (mean distance {report['mean_distance']:.2f})")
    if "hungarian_accuracy_by_depth" in report:
        ax.plot(d, report["hungarian_accuracy_by_depth"], "s-",
                label=f"Hungarian match (mean distance {report['hungarian_mean_distance']:.2f})")
    ax.plot(d, report["chance_accuracy_by_depth"], "k--",
            label=f"random naming (mean distance {report['chance_mean_distance']:.2f})")
    ax.set_xlabel("depth d of the shared hypernym (0: entity; the true class's own depth: exact)")
    ax.set_ylabel("share of units named within the true class's hypernym")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    mantel = report["mantel"]
    ax.set_title((title + "\n" if title else "") + f"Mantel test, similarity vs Wu-Palmer: r = {mantel['r']:.3f}, "
                 f"p = {mantel['p']:.3g} ({mantel['permutations']} {'' if mantel['exact'] else 'random '}"
                 "relabellings)", fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
