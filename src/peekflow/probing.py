"""PEEK probing: name the output units of an "unknown" network from its class prototypes alone.

An independent probe network embeds the prototypes (one group per output unit of the unknown network) and a labelled
"known search space" of real images. For every unit and known class:

- similarity S[u, c] = mean cosine between the unit's prototype features and the class's image features
  (= <mean of the unit's unit-length features, mean of the class's unit-length features>);
- votes V[u, c] = share of the k nearest known images (cosine) of the unit's prototypes that belong to class c.

The unit's best match is argmax_c of the matching matrix M (S or V); a Hungarian assignment (scipy's
linear_sum_assignment on M) uses that every unit names a different class. Two label-free corrections:
- `center`: ReLU features are all non-negative, so raw cosines crowd near 1; the search space's mean feature is
  subtracted first (from both sides), which spreads them.
- `standardise: class` (hubness): some known classes sit close to every prototype and attract them all (the "hub"
  problem of cross-space nearest neighbours, cf. CSLS in Conneau et al. 2018). Each column of M is standardised over
  the units (z-score), so a unit matches the class it is *distinctively* close to. `none` keeps M as it is.
similarity.csv always holds the raw S.

Nothing here sees the unknown network's class names: they are the answer key, used only by `evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from peekflow.settings import Settings, setting


@dataclass
class ProbeSettings(Settings):
    k: int = setting(10, "neighbours per prototype in the kNN vote", minimum=1)
    center: bool = setting(True, "subtract the search space's mean feature before the cosine")
    match: str = setting("similarity", "the matrix that names each unit: similarity or votes",
                         choices=["similarity", "votes"])
    standardise: str = setting("class", "class (z-score each known class's column over the units) or none",
                               choices=["class", "none"])


@dataclass
class ProbeResult:
    units: np.ndarray  # [U] output units of the unknown network, sorted
    similarity: np.ndarray  # [U, K] mean cosine
    votes: np.ndarray  # [U, K] kNN vote shares, rows sum to 1
    matching: np.ndarray  # [U, K] the matrix that names the units (S or V, standardised per class if asked)
    best: np.ndarray  # [U] known-class index per unit (argmax of `matching`)
    hungarian: np.ndarray  # [U] known-class index per unit, one-to-one where U <= K


def _unit_length(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def probe(proto_features: np.ndarray, proto_units: np.ndarray, known_features: np.ndarray, known_labels: np.ndarray,
          n_known: int, settings: ProbeSettings = ProbeSettings()) -> ProbeResult:
    """Similarity and votes of every unit (prototype group) against every known class 0..n_known-1."""
    proto_units, known_labels = np.asarray(proto_units), np.asarray(known_labels)
    if len(proto_features) != len(proto_units) or len(known_features) != len(known_labels):
        raise ValueError("probe: features and their units/labels differ in length")
    if proto_features.shape[1] != known_features.shape[1]:
        raise ValueError(f"probe: prototype features have {proto_features.shape[1]} dimensions, the search space "
                         f"{known_features.shape[1]}: embed both with the same probe layer")
    keep = known_labels >= 0
    if not keep.any():
        raise ValueError("probe: the known search space has no labelled image (all labels are -1)")
    known_features, known_labels = known_features[keep], known_labels[keep]
    missing = sorted(set(range(n_known)) - set(known_labels.tolist()))
    if missing:
        raise ValueError(f"probe: known classes {missing} have no image in the search space")
    if settings.match not in ("similarity", "votes"):
        raise ValueError(f"probe: match must be similarity or votes, got {settings.match!r}")
    if settings.standardise not in ("class", "none"):
        raise ValueError(f"probe: standardise must be class or none, got {settings.standardise!r}")
    if settings.k < 1:
        raise ValueError(f"probe: k must be >= 1, got {settings.k}")

    shift = np.asarray(known_features, np.float64).mean(0) if settings.center else 0.0
    p = _unit_length(proto_features - shift)
    q = _unit_length(known_features - shift)
    units = np.unique(proto_units)
    unit_means = np.stack([p[proto_units == u].mean(0) for u in units])
    class_means = np.stack([q[known_labels == c].mean(0) for c in range(n_known)])
    similarity = unit_means @ class_means.T

    k = min(settings.k, len(q))
    nearest = np.argsort(-(p @ q.T), axis=1, kind="stable")[:, :k]
    hits = np.zeros((len(p), n_known))
    np.add.at(hits, (np.repeat(np.arange(len(p)), k), known_labels[nearest].ravel()), 1.0 / k)
    votes = np.stack([hits[proto_units == u].mean(0) for u in units])

    scores = similarity if settings.match == "similarity" else votes
    if settings.standardise == "class" and len(units) > 1:
        scores = (scores - scores.mean(0)) / np.maximum(scores.std(0), 1e-12)
    rows, cols = linear_sum_assignment(scores, maximize=True)
    hungarian = np.full(len(units), -1)
    hungarian[rows] = cols
    return ProbeResult(units, similarity, votes, scores, scores.argmax(1), hungarian)


def evaluate(result: ProbeResult, unit_names: list[str], known_classes: list[str]) -> dict:
    """Score a probe against the answer key: `unit_names[u]` is what unit u truly is."""
    truth = [unit_names[u] for u in result.units]
    absent = sorted(set(truth) - set(known_classes))
    if absent:
        raise ValueError(f"the known search space lacks the true classes {absent}: probing cannot name them")

    def share(choice: np.ndarray) -> float:
        return float(np.mean([c >= 0 and known_classes[c] == t for c, t in zip(choice, truth)]))

    return {
        "accuracy": share(result.best),
        "hungarian_accuracy": share(result.hungarian),
        "raw_similarity_accuracy": share(result.similarity.argmax(1)),
        "raw_votes_accuracy": share(result.votes.argmax(1)),
        "n_units": int(len(result.units)),
        "n_known_classes": len(known_classes),
        "chance": 1.0 / len(known_classes),
        "units": {int(u): {"true_class": t, "best_match": known_classes[b],
                           "hungarian_match": known_classes[h] if h >= 0 else None,
                           "similarity": round(float(result.similarity[i, b]), 6),
                           "matching_score": round(float(result.matching[i, b]), 6)}
                  for i, (u, t, b, h) in enumerate(zip(result.units, truth, result.best, result.hungarian))},
    }


def plot_similarity(path, result: ProbeResult, known_classes: list[str], unit_names: list[str] | None = None,
                    title: str = ""):
    """Heatmap of S (units x known classes); dots mark each unit's best match, boxes the true class if known. The
    title (model, method, probe) is wrapped to the figure's width, the legend sits below: nothing is clipped. Returns
    the Figure (saved to `path`)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from peekflow.figures import save_figure, wrap_title

    u, k = result.similarity.shape
    width = max(4.5, 1.6 + 0.45 * k)
    fig = Figure(figsize=(width, 2.0 + 0.4 * u), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(result.similarity, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label="mean cosine")
    ax.set_xticks(range(k), known_classes, rotation=60, ha="right")
    ax.set_yticks(range(u), [f"unit {int(x)}" for x in result.units])
    ax.set_xlabel("known class (probe search space)")
    ax.scatter(result.best, range(u), c="white", edgecolors="black", linewidths=0.5, s=22, label="best match")
    if unit_names is not None:
        for row, unit in enumerate(result.units):
            if unit_names[unit] in known_classes:
                col = known_classes.index(unit_names[unit])
                ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
        ax.plot([], [], "s", mfc="none", mec="red", label="true class")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(wrap_title(title, width - 0.2, 9), fontsize=9)
    save_figure(fig, path, dpi=110)
    return fig


def write_similarity_csv(path, result: ProbeResult, known_classes: list[str]) -> None:
    from peekflow.io import write_text

    lines = ["unit," + ",".join(known_classes)]
    lines += [f"{int(u)}," + ",".join(f"{v:.6f}" for v in row) for u, row in zip(result.units, result.similarity)]
    write_text(path, "\n".join(lines) + "\n")
