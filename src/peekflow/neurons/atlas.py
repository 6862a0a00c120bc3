"""The neuron atlas: a static site (results/atlas/<model>/, opened from the file system, no server, no network) built
from a layer's existing neuron outputs -- top-N images (topn.h5), top-k patches (patches/patches.h5), and, where the
layer is labelled, DORA (dora.csv, dora.png, dora_signals.h5), INVERT (invert.csv) and VITAL (vital.h5).

<out>/index.html                  home: the model, a table of its layers (neurons shown of the layer's channels, top-N,
                                  k, INVERT labels, DORA outliers, VITAL), the most outlying neurons and the best
                                  INVERT labels of all layers
<out>/<layer>/index.html          a grid of the layer's neurons (those with patches): each its thumbnail, INVERT label
                                  and AUC, DORA outlier mark and LOF; sorted by neuron, INVERT AUC, DORA LOF or top
                                  activation, filtered by label text, outliers only, labelled only
<out>/<layer>/neuron_<c>.html     the top-N images with the neuron's patch boxes framed over them (a token layer: the
                                  token's cell), the patches (crops of those images; a token layer's: the token framed
                                  in its context), LOF score / flag / rank, INVERT formula / AUC / p-value, the nearest
                                  neurons in DORA's 2-D map (dora.csv holds MDS coordinates of the extreme-activation
                                  distances, not the distances: neighbours are by distance in that map), VITAL, s-AMS
images/, <layer>/img/             the PNGs, each written once (atlas_images): a top-N image is shared by every neuron
                                  and layer that ranks it (boxes and patches are CSS frames and crops of it), a
                                  neuron's thumbnail by every page that shows the neuron

The model's output layer, where DORA's units (the classes) are judged against WordNet (dora_wordnet.json, semantics),
gets a layer page of its own without top-N images or patches (peekflow.neurons.atlas_units): the Mantel test's r and
p above a table of its units -- class, LOF score, outlier flag, rank, s-AMS -- and DORA's figure; a labelled layer's
page shows the same test where it has one.

A partial run builds too: an input that does not exist yet is named on the pages it would fill ("not built yet"), and
a layer without top-N images or patches gets an index page saying so and no neuron pages. All text is escaped
(html.escape). The folder is built under a temporary name and renamed when whole.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from peekflow.data.folder import Preprocessing
from peekflow.io import atomic_folder
from peekflow.neurons.atlas_grid import grid_page
from peekflow.neurons.atlas_images import SharedImages, cell_side, page_weight, save_png
from peekflow.neurons.atlas_neuron import LayerView, esc, neuron_body
from peekflow.neurons.patch_files import info_of, patch_view, read_patches
from peekflow.neurons.patches import token_marks
from peekflow.neurons.topn import read_topn

__all__ = ["LayerInputs", "build_atlas", "page_weight"]
THUMB = 64  # px of a neuron's thumbnail (one file per neuron, shared by every page that shows it)
NEIGHBOURS = 6
HIGHLIGHTS = 8  # neurons on the home page per list
STYLE = ("body{font-family:sans-serif;margin:1em}img{image-rendering:pixelated}td,th{padding:2px 8px;text-align:left}"
         ".grid{display:flex;flex-wrap:wrap;gap:6px}.n{display:inline-block;width:112px;text-align:center;"
         "font-size:11px;text-decoration:none;color:#222;border:1px solid #ddd;padding:2px}.n.out{outline:2px solid "
         "#c00}.n span{display:block;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}.o{color:#c00;"
         "font-weight:bold}figure{display:inline-block;margin:4px;vertical-align:top}.boxed{position:relative;"
         "display:inline-block}.crop{position:relative;display:inline-block;background-repeat:no-repeat;"
         "image-rendering:pixelated}.boxed span,.crop span{position:absolute;box-sizing:border-box;border:2px solid "
         "#ffd700}.caps{display:flex;font-size:11px}.caps span{text-align:center}")


@dataclass
class LayerInputs:
    topn: str | None = None  # topn.h5 (None: a layer with DORA only, the output layer)
    patches: str | None = None  # the patch folder
    dora: str | None = None  # dora.csv
    dora_figure: str | None = None  # dora.png
    dora_signals: str | None = None  # dora_signals.h5: every neuron's s-AMS
    invert: str | None = None  # invert.csv
    vital: str | None = None  # vital.h5
    dora_wordnet: str | None = None  # dora_wordnet.json: DORA's units (the output layer's) against WordNet

    def missing(self) -> dict[str, str]:
        """Input -> path, for the inputs given that do not exist (yet)."""
        return {k: v for k, v in vars(self).items() if v and not Path(v).exists()}


@dataclass
class LayerSummary:
    """What the home page says of a layer."""

    layer: str
    neurons: int = 0  # with pages
    channels: int | None = None  # of the layer
    topn: int | None = None
    k: int | None = None
    token: dict | None = None  # a token layer's cell and context (patch folder's info)
    labelled: int | None = None  # INVERT: neurons with a formula
    significant: int | None = None  # INVERT: with p < 0.001
    outliers: int | None = None  # DORA
    vital: int | None = None  # channels with VITAL
    missing: dict = field(default_factory=dict)
    cells: list = field(default_factory=list)  # (neuron, dora row, invert row) of each page, for the highlights


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def neighbours(dora: pd.DataFrame | None, k: int = NEIGHBOURS) -> dict[int, list[tuple[int, float]]]:
    """Neuron -> its k nearest activated neurons by Euclidean distance in DORA's 2-D map (x, y)."""
    if dora is None:
        return {}
    placed = dora[dora["activated"].astype(bool) & dora[["x", "y"]].notna().all(axis=1)]
    ids, xy = placed["neuron"].to_numpy(int), placed[["x", "y"]].to_numpy(float)
    dist = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    out = {}
    for i, n in enumerate(ids):
        order = [j for j in np.argsort(dist[i], kind="stable") if j != i][:k]
        out[int(n)] = [(int(ids[j]), float(dist[i, j])) for j in order]
    return out


def build_atlas(out, model: str, layers: dict[str, LayerInputs], thumb: int = THUMB) -> dict:
    """Write the atlas of `model` into the folder `out` (replaced when whole); returns {layer: neurons}."""
    with atomic_folder(out) as tmp:
        shared: dict[str, SharedImages] = {}
        summaries = [build_layer(tmp, model, layer, inputs, thumb, shared) for layer, inputs in layers.items()]
        (tmp / "index.html").write_text(home_page(model, summaries, shared))
    return {s.layer: s.neurons for s in summaries}


def _table(path: str | None) -> pd.DataFrame | None:
    return pd.read_csv(path) if path else None


def missing_note(missing: dict[str, str]) -> str:
    if not missing:
        return ""
    items = ", ".join(f"{esc(k)} ({esc(v)})" for k, v in missing.items())
    return f'<p class="missing">Not built yet, so not shown: {items}.</p>'


def build_layer(out: Path, model: str, layer: str, inputs: LayerInputs, thumb: int,
                shared: dict[str, SharedImages]) -> LayerSummary:
    from peekflow.neurons.atlas_units import dora_only_layer, wordnet_section  # it imports this module

    folder = out / layer
    (folder / "img").mkdir(parents=True)
    missing = inputs.missing()
    summary = LayerSummary(layer, missing=missing)
    if inputs.topn is None and inputs.patches is None:  # the output layer: DORA's units only (atlas_units)
        present = LayerInputs(**{k: (None if k in missing else v) for k, v in vars(inputs).items()})
        summary.neurons = summary.channels = dora_only_layer(folder, model, layer, present, missing)
        dora = _table(present.dora)
        summary.outliers = None if dora is None else int(dora["outlier"].astype(bool).sum())
        return summary
    if "topn" in missing or "patches" in missing:
        body = (f'<p><a href="../index.html">{esc(model)}</a></p><h1>{esc(layer)}: no neurons yet</h1>'
                + missing_note(missing))
        (folder / "index.html").write_text(page(f"{model} {layer}: neurons", body))
        return summary
    inputs = LayerInputs(**{k: (None if k in missing else v) for k, v in vars(inputs).items()})
    topn, (patches, attrs) = read_topn(inputs.topn), read_patches(inputs.patches)
    recorded = topn.attrs["preprocessing"]
    if recorded not in shared:
        shared[recorded] = SharedImages(out, Preprocessing(**json.loads(recorded)))
    images = shared[recorded]
    info = info_of(attrs)
    marks = token_marks(patches, info)
    dora, invert = _table(inputs.dora), _table(inputs.invert)
    vital, sams = read_vital_images(inputs.vital), read_sams(inputs.dora_signals)
    dora_rows = {int(r.neuron): r for r in dora.itertuples()} if dora is not None else {}
    invert_rows = {int(r.neuron): r for r in invert.itertuples()} if invert is not None else {}
    near = neighbours(dora)
    order = [int(c) for c in patches.channels]
    if inputs.dora_figure:
        shutil.copyfile(inputs.dora_figure, folder / "img" / "dora.png")
    view = LayerView(folder, model, layer, topn, patches, marks, cell_side(max(patches.pixels.shape[-2:])), images,
                     order, bool(inputs.dora_figure), info)
    for s, c in enumerate(order):
        # the neuron's one thumbnail file: the grid, the home page, its page and its neighbours' pages show it
        save_png(patch_view(patches.pixels[s, 0], thumb, None if marks is None else marks[s, 0]),
                 folder / "img" / f"thumb_{c}.png")
        body = neuron_body(view, c, s, dora_rows.get(c), invert_rows.get(c), near.get(c, []), vital.get(c),
                           sams.get(c))
        (folder / f"neuron_{c}.html").write_text(page(f"{model} {layer} neuron {c}", body + missing_note(missing)))
        summary.cells.append((c, dora_rows.get(c), invert_rows.get(c)))
    summary.neurons, summary.channels = len(order), topn.indices.shape[0]
    summary.topn, summary.k, summary.token = topn.indices.shape[1], patches.pixels.shape[1], info.get("token")
    if invert is not None:
        summary.labelled = int(invert["formula"].notna().sum())
        summary.significant = int((invert["formula"].notna() & (invert["p_value"] < 0.001)).sum())
    if dora is not None:
        summary.outliers = int(dora["outlier"].astype(bool).sum())
    if vital:
        summary.vital = len(vital)
    top_act = {int(c): float(topn.activations[c, 0]) for c in order}
    (folder / "index.html").write_text(page(f"{model} {layer}: neurons", grid_page(
        model, layer, summary, top_act, thumb, bool(inputs.dora_figure),
        missing_note(missing) + wordnet_section(inputs.dora_wordnet))))
    return summary


def read_sams(path: str | None) -> dict[int, np.ndarray]:
    """Neuron -> its s-AMS [per_neuron, 3, H, W] uint8 from DORA's signal file (empty without one)."""
    if not path:
        return {}
    from peekflow.neurons.dora_shards import read_signals

    signals, _ = read_signals(path)
    per = len(signals.images) // max(1, len(signals.neurons))
    images = np.rint(np.clip(signals.images, 0, 1) * 255).astype(np.uint8)
    return {int(n): images[i * per:(i + 1) * per] for i, n in enumerate(signals.neurons)}


def read_vital_images(path: str | None) -> dict[int, dict]:
    """Channel -> its plain and VITAL images and measurements from vital.h5 (empty without one)."""
    if not path:
        return {}
    from peekflow.neurons.vital_files import read_vital

    data, attrs = read_vital(path)
    out = {}
    for s, c in enumerate(data["channels"]):
        values = {key: float(v[s]) for key, v in data.items() if key.startswith(("activation/", "similarity/"))}
        out[int(c)] = {"plain": data["plain"][s], "vital": data["vital"][s], "grey": attrs.get("grey"), **values}
    return out


def home_page(model: str, summaries: list[LayerSummary], shared: dict[str, SharedImages]) -> str:
    def cell(value, total=None):
        return "not run" if value is None else f"{value}" + (f" of {total}" if total is not None else "")

    rows = []
    for s in summaries:
        token = f"token layer ({s.token['cell'][0]} px cells)" if s.token else ""
        rows.append(f'<tr><td><a href="{esc(s.layer)}/index.html">{esc(s.layer)}</a></td>'
                    f"<td>{cell(s.neurons, s.channels) if s.channels else 'no neurons yet'}</td><td>{cell(s.topn)}</td>"
                    f"<td>{cell(s.k)}</td><td>{cell(s.labelled)}</td><td>{cell(s.significant)}</td>"
                    f"<td>{cell(s.outliers)}</td><td>{cell(s.vital)}</td><td>{esc(token)}</td></tr>")
    head = ("<tr><th>layer</th><th>neurons shown (of its channels)</th><th>top-N images</th><th>patches</th>"
            "<th>INVERT labelled</th><th>p &lt; 0.001</th><th>DORA outliers</th><th>VITAL</th><th></th></tr>")
    outlying = sorted(((s.layer, c, d) for s in summaries for c, d, _ in s.cells if d is not None and d.outlier),
                      key=lambda t: (float(t[2].rank), t[0], t[1]))[:HIGHLIGHTS]
    labelled = sorted(((s.layer, c, i) for s in summaries for c, _, i in s.cells
                       if i is not None and not pd.isna(i.formula)), key=lambda t: (-float(t[2].auc), t[0], t[1]))
    lists = [highlights("Most outlying neurons (DORA)", [(layer, c, f"LOF {d.lof:.3g}") for layer, c, d in outlying]),
             highlights("Best INVERT labels", [(layer, c, f"{i.formula} (AUC {i.auc:.3f})")
                                               for layer, c, i in labelled[:HIGHLIGHTS]])]
    missing = "".join(f"<p>{esc(s.layer)}: {missing_note(s.missing)}</p>" for s in summaries if s.missing)
    images = sum(len(x.written) for x in shared.values())
    body = (f"<h1>Neuron atlas of {esc(model)}</h1><p>{len(summaries)} layer(s), "
            f"{sum(s.neurons for s in summaries)} neurons, {images} distinct top-N images.</p>"
            f"<table>{head}{''.join(rows)}</table>{missing}{''.join(lists)}")
    return page(f"{model}: neuron atlas", body)


def highlights(title: str, items: list[tuple[str, int, str]]) -> str:
    if not items:
        return ""
    cells = "".join(f'<a class="n" href="{esc(layer)}/neuron_{c}.html" title="{esc(text)}"><img '
                    f'src="{esc(layer)}/img/thumb_{c}.png" loading="lazy" width="{THUMB}" height="{THUMB}" '
                    f'alt="{esc(layer)} neuron {c}"><span>{esc(layer)} {c}</span><span>{esc(text)}</span></a>'
                    for layer, c, text in items)
    return f'<h2>{esc(title)}</h2><div class="grid">{cells}</div>'
