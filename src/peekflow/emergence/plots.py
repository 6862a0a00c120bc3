"""Emergence figures (matplotlib's object API, Agg canvas; PNGs written atomically):

- per layer, like the paper's: left the samples' embedding directions on the unit sphere coloured by class, the class
  directions mu_y as labelled stars; right every region's direction, knowledge points coloured by the class they
  point to, the other regions small and grey;
- the curve "knowledge points per layer" (all, and those toward the image's label);
- the adversarial trajectory: per layer the path of each attacked image's sample embedding on the sphere, and per
  PGD step the knowledge points toward the true class and toward other classes.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from peekflow.figures import save_figure, wrap_title


def class_colours(n: int) -> np.ndarray:
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "hsv"]
    return np.array([cmap(i if n <= 20 else i / n) for i in range(n)])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def to_3d(reference: np.ndarray):
    """A map of d-dimensional embeddings into 3-D for drawing: identity for d = 3, a zero third axis for d = 2, the
    top three principal axes of the reference directions (uncentred) for d > 3."""
    d = reference.shape[-1]
    if d == 3:
        return lambda x: x
    if d < 3:
        return lambda x: np.concatenate([x, np.zeros(x.shape[:-1] + (3 - d,))], axis=-1)
    _, _, vt = np.linalg.svd(_unit(reference.reshape(-1, d)), full_matrices=False)
    return lambda x: x @ vt[:3].T


def _sphere(ax, title: str) -> None:
    u, v = np.mgrid[0:2 * np.pi:24j, 0:np.pi:12j]
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", lw=0.4)
    ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xticklabels=[], yticklabels=[], zticklabels=[])
    ax.set_box_aspect((1, 1, 1))
    ax.set_title(title, fontsize=9)


def _class_stars(ax, directions: np.ndarray, classes: list[str], colours: np.ndarray) -> None:
    mu = _unit(directions)
    ax.scatter(*mu.T * 1.05, marker="*", s=160, c=colours[:len(mu)], edgecolors="k", linewidths=0.6, depthshade=False)
    for y, name in enumerate(classes):
        ax.text(*(mu[y] * 1.18), name, fontsize=6)


def plot_layer(path, layer: str, sample_emb: np.ndarray, labels: np.ndarray, class_dirs: np.ndarray,
               region_emb: np.ndarray, kp_mask: np.ndarray, kp_class: np.ndarray, classes: list[str],
               dpi: int = 120, title: str = "") -> None:
    """sample_emb [N, d], labels [N], class_dirs [Y, d], region_emb [N, R, d], kp_mask / kp_class [N, R]; drawn in
    3-D (to_3d); `title` (model and layer) above both panels."""
    project = to_3d(sample_emb)
    sample_emb, class_dirs, region_emb = project(sample_emb), project(class_dirs), project(region_emb)
    colours = class_colours(len(classes))
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    _sphere(ax, f"{layer}: {len(labels)} samples (direction of g), coloured by class")
    ax.scatter(*_unit(sample_emb).T, s=8, c=colours[labels], depthshade=False)
    _class_stars(ax, class_dirs, classes, colours)
    ax = fig.add_subplot(1, 2, 2, projection="3d")
    regions, mask = _unit(region_emb.reshape(-1, 3)), kp_mask.reshape(-1)
    _sphere(ax, f"{layer}: {int(mask.sum())} knowledge points of {mask.size} regions")
    ax.scatter(*regions[~mask].T, s=2, c="0.6", alpha=0.4, depthshade=False)
    ax.scatter(*regions[mask].T, s=9, marker="^", c=colours[kp_class.reshape(-1)[mask]], depthshade=False)
    _class_stars(ax, class_dirs, classes, colours)
    if title:
        fig.suptitle(wrap_title(title, 9.8), fontsize=10)
    save_figure(fig, path, dpi)


def plot_counts(path, rows: list[dict], title: str = "", dpi: int = 120):
    """The curve of knowledge points per layer (rows as written to knowledge_points.csv); a run without any
    knowledge point says so in words on an axis from 0, not as a flat line on an axis of +-0.04. Returns the Figure."""
    layers = [r["layer"] for r in rows]
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    if not any(r["knowledge_points"] for r in rows):
        regions = f"\n(none of the {rows[0]['regions']} regions of any layer)" if rows else ""
        ax.text(0.5, 0.5, f"no knowledge points{regions}",
                transform=ax.transAxes, ha="center", va="center", fontsize=10)
        ax.set(xticks=x, xticklabels=layers, xlabel="layer", ylabel="knowledge points", ylim=(0, 1),
               xlim=(-0.5, max(len(rows), 1) - 0.5), title=wrap_title(title, 4.6))
        save_figure(fig, path, dpi)
        return fig
    for key, label in [("knowledge_points", "knowledge points"), ("toward_label", "toward the image's label")]:
        y = [r[key] for r in rows]
        ax.plot(x, y, marker="o", label=label)
        if key == "knowledge_points":
            for xi, yi in zip(x, y):
                ax.annotate(str(yi), (xi, yi), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
    ax.set(xticks=x, xticklabels=layers, xlabel="layer", title=wrap_title(title, 4.6), ylim=(0, None),
           ylabel=f"knowledge points (of {rows[0]['regions']} regions)")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi)
    return fig


def plot_trajectory(path, layers: list[str], sample_paths: np.ndarray, class_dirs: list[np.ndarray],
                    toward_true: np.ndarray, toward_other: np.ndarray, true_prob: np.ndarray, classes: list[str],
                    title: str = "", dpi: int = 120) -> None:
    """sample_paths [L, S+1, B, d] sample embeddings per layer, step and image; class_dirs per layer [Y, 3];
    toward_true / toward_other [L, S+1] knowledge points of the attacked images; true_prob [S+1, B]."""
    n_layers, n_steps, n_images = sample_paths.shape[:3]
    projections = [to_3d(sample_paths[li]) for li in range(n_layers)]
    sample_paths = np.stack([project(sample_paths[li]) for li, project in enumerate(projections)])
    class_dirs = [project(c) for project, c in zip(projections, class_dirs)]
    colours = class_colours(len(classes))
    image_colours = colormaps["viridis"](np.linspace(0, 0.9, n_images))
    fig = Figure(figsize=(3.2 * max(n_layers, 3), 6.6), layout="constrained")
    grid = fig.add_gridspec(2, max(n_layers, 3))
    for li, layer in enumerate(layers):
        ax = fig.add_subplot(grid[0, li], projection="3d")
        _sphere(ax, f"{layer}: sample embedding path")
        _class_stars(ax, class_dirs[li], classes, colours)
        for b in range(n_images):
            track = _unit(sample_paths[li, :, b])
            ax.plot(*track.T, color=image_colours[b], lw=1.2)
            ax.scatter(*track[0], marker="o", s=18, color=image_colours[b], depthshade=False)
            ax.scatter(*track[-1], marker="x", s=24, color=image_colours[b], depthshade=False)
    steps = np.arange(n_steps)
    panels = [(toward_true, "knowledge points toward the true class"),
              (toward_other, "knowledge points toward other classes")]
    for col, (values, label) in enumerate(panels):
        ax = fig.add_subplot(grid[1, col])
        for li, layer in enumerate(layers):
            ax.plot(steps, values[li], marker=".", label=layer)
        ax.set(xlabel="PGD step", ylabel="count", title=label)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, 2])
    for b in range(n_images):
        ax.plot(steps, true_prob[:, b], color=image_colours[b], marker=".")
    ax.set(xlabel="PGD step", ylabel="probability of the true class", ylim=(-0.02, 1.02), title="output")
    ax.title.set_fontsize(9)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi)
