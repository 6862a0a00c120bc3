"""The neuron atlas: a static site (results/atlas/<model>/, opened from the file system, no server, no network) built
from a layer's existing neuron outputs -- top-N images (topn.h5), top-k patches (patches/patches.h5), and, where the
layer is labelled, DORA (dora.csv, dora.png, dora_signals.h5), INVERT (invert.csv) and VITAL (vital.h5).

<out>/index.html                  home: the model, a table of its layers (neurons shown of the layer's channels, top-N,
                                  k, INVERT labels, DORA outliers, VITAL), the most outlying neurons and the best
                                  INVERT labels of all layers
<out>/<layer>/index.html          a grid of the layer's neurons (those with patches): each its thumbnail, INVERT label
                                  and AUC, DORA outlier mark and LOF; sorted by neuron, INVERT AUC, DORA LOF or top
                                  activation, filtered by label text, outliers only, labelled only
<out>/<layer>/neuron_<c>.html     the top-N images with the neuron's patch boxes drawn over them (a token layer: the
                                  token's cell), the patches (a token layer: the token framed in its context), LOF
                                  score / flag / rank, INVERT formula / AUC / p-value, the nearest neurons in DORA's
                                  2-D map (dora.csv holds MDS coordinates of the extreme-activation distances, not the
                                  distances: neighbours are by distance in that map), VITAL and the s-AMS
images, <layer>/img               the PNGs, each written once (atlas_images: a top-N image is shared by every neuron
                                  and layer that ranks it, a thumbnail by every page that shows the neuron)

A partial run builds too: an input that does not exist yet is named on the pages it would fill ("not built yet"), and
a layer without top-N images or patches gets an index page saying so and no neuron pages. All text is escaped
(html.escape). The folder is built under a temporary name and renamed when whole.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from peekflow.data.folder import Preprocessing
from peekflow.io import atomic_folder
from peekflow.neurons.atlas_grid import grid_page
from peekflow.neurons.atlas_images import SharedImages, cell_side, is_grey, page_weight, save_png, save_strip
from peekflow.neurons.patch_files import info_of, patch_view, read_patches
from peekflow.neurons.patches import token_marks
from peekflow.neurons.topn import read_topn

__all__ = ["LayerInputs", "build_atlas", "page_weight"]
THUMB = 64  # px of a neuron's thumbnail (one file per neuron, shared by every page that shows it)
NEIGHBOURS = 6
HIGHLIGHTS = 8  # neurons on the home page per list
MIN_SIDE = 128  # top-N images are shown at least this wide (enlarged by the browser, pixelated)
STYLE = ("body{font-family:sans-serif;margin:1em}img{image-rendering:pixelated}.grid{display:flex;flex-wrap:wrap;"
         "gap:6px}.n{display:inline-block;width:112px;text-align:center;font-size:11px;text-decoration:none;"
         "color:#222;border:1px solid #ddd;padding:2px}.n.out{outline:2px solid #c00}.n span{display:block;"
         "overflow:hidden;white-space:nowrap;text-overflow:ellipsis}.o{color:#c00;font-weight:bold}"
         "figure{display:inline-block;margin:4px;vertical-align:top}.boxed{position:relative;display:inline-block}"
         ".boxed span{position:absolute;box-sizing:border-box;border:2px solid #ffd700}.caps{display:flex;"
         "font-size:11px}.caps span{text-align:center}td,th{padding:2px 8px;text-align:left}")


@dataclass
class LayerInputs:
    topn: str
    patches: str
    dora: str | None = None  # dora.csv
    dora_figure: str | None = None  # dora.png
    dora_signals: str | None = None  # dora_signals.h5: every neuron's s-AMS
    invert: str | None = None  # invert.csv
    vital: str | None = None  # vital.h5

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


def esc(value) -> str:
    return html.escape(str(value), quote=True)


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
    folder = out / layer
    (folder / "img").mkdir(parents=True)
    missing = inputs.missing()
    summary = LayerSummary(layer, missing=missing)
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
    side = cell_side(max(patches.pixels.shape[-2:]))
    for s, c in enumerate(order):
        # the neuron's one thumbnail file: the grid, the home page, its page and its neighbours' pages show it
        save_png(patch_view(patches.pixels[s, 0], thumb, None if marks is None else marks[s, 0]),
                 folder / "img" / f"thumb_{c}.png")
        body = neuron_body(folder, model, layer, c, s, topn, patches, marks, side, images, dora_rows.get(c),
                           invert_rows.get(c), near.get(c, []), set(order), bool(inputs.dora_figure), vital.get(c),
                           sams.get(c), info, order)
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
        model, layer, summary, top_act, thumb, bool(inputs.dora_figure), missing_note(missing))))
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


def strip_html(src: str, captions: list[str], size: tuple[int, int], alt: str) -> str:
    """One strip image (save_strip) with a caption under each of its cells."""
    w, h = size
    n = len(captions)
    caps = "".join(f'<span style="width:{w}px;margin-right:{4 if j < n - 1 else 0}px">{c}</span>'
                   for j, c in enumerate(captions))
    return (f'<div><img src="{src}" loading="lazy" width="{n * (w + 4) - 4}" height="{h}" alt="{esc(alt)}">'
            f'<div class="caps">{caps}</div></div>')


def boxed_html(src: str, width: int, height: int, boxes, caption: str, alt: str) -> str:
    """A shared image shown at least MIN_SIDE px wide, each box (top, left, bottom, right) drawn over it by CSS."""
    shown = max(MIN_SIDE, width)
    spans = "".join(f'<span style="top:{100 * t / height:.3f}%;left:{100 * left / width:.3f}%;'
                    f'height:{100 * (b - t) / height:.3f}%;width:{100 * (r - left) / width:.3f}%"></span>'
                    for t, left, b, r in boxes)
    return (f'<figure><div class="boxed"><img src="{src}" loading="lazy" width="{shown}" '
            f'height="{round(shown * height / width)}" alt="{esc(alt)}">{spans}</div>'
            f"<figcaption>{caption}</figcaption></figure>")


def label_rows(dora_row, invert_row) -> list[tuple[str, str]]:
    rows = []
    if invert_row is not None:
        formula = "(none)" if pd.isna(invert_row.formula) else invert_row.formula
        rows += [("INVERT formula", formula), ("INVERT AUC", f"{invert_row.auc:.4g}"),
                 ("INVERT p-value", f"{invert_row.p_value:.3g}")]
    if dora_row is not None:
        rows += [("DORA LOF score", f"{dora_row.lof:.4g}"), ("DORA outlier", "yes" if dora_row.outlier else "no"),
                 ("DORA rank", dora_row.rank), ("s-AMS raised the neuron", "yes" if dora_row.activated else "no")]
    return rows


def neuron_body(folder, model, layer, c, s, topn, patches, marks, side, images: SharedImages, dora_row, invert_row,
                near, pages, has_figure, vital, sams, info, order) -> str:
    img = folder / "img"
    top = []
    for j, (row, path, act) in enumerate(zip(topn.indices[c], topn.paths[c], topn.activations[c])):
        name, width, height = images.get(str(path))
        top.append(boxed_html(f"../images/{name}", width, height, patches.boxes[s][patches.rows[s] == row],
                              f"{act:.4g}<br>{esc(Path(path).name)}", f"top image {j + 1}"))
    size = save_strip(patches.pixels[s], img / f"patches_{c}.png", side, None if marks is None else marks[s])
    crops = strip_html(f"img/patches_{c}.png", [f"{a:.4g}" for a in patches.activations[s]], size,
                       f"top-{len(patches.activations[s])} patches")
    token = info.get("token")
    what = (f"token layer: each patch is the token's {token['cell'][0]} px cell (framed) with "
            f"{token['context'][0]} px of context" if token else "")
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                    for k, v in label_rows(dora_row, invert_row)) or "<tr><td>not labelled</td></tr>"
    links = " ".join((f'<a href="neuron_{n}.html" title="neuron {n}"><img src="img/thumb_{n}.png" loading="lazy" '
                      f'width="32" height="32" alt="neuron {n}"> {n}</a>' if n in pages else str(n)) + f" ({d:.3g})"
                     for n, d in near)
    at = order.index(c)
    step = " ".join(f'<a href="neuron_{order[i]}.html">{label}</a>'
                    for i, label in ((at - 1, "&larr; previous"), (at + 1, "next &rarr;")) if 0 <= i < len(order))
    return (f'<p><a href="../index.html">{esc(model)}</a> &rsaquo; <a href="index.html">{esc(layer)}</a> &rsaquo; '
            f"neuron {c} &nbsp; {step}</p><h1>{esc(layer)}, neuron {c}</h1><table>{table}</table>"
            + (f"<p>Nearest neurons in DORA's 2-D map (distance in the map): {links}</p>" if near else "")
            + ('<p><a href="img/dora.png">DORA map and s-AMS of the layer</a></p>' if has_figure else "")
            + f"<h2>Top-{len(top)} images (patch boxes in yellow)</h2>{''.join(top)}"
            + f"<h2>Top-{len(patches.activations[s])} patches</h2>" + (f"<p>{esc(what)}</p>" if what else "")
            + crops + vital_section(img, c, vital, side) + sams_section(img, c, sams, side, images.grey))


def vital_section(img: Path, c: int, vital: dict | None, side: int) -> str:
    if vital is None:
        return ""
    size = save_strip(np.stack([vital["plain"], vital["vital"]]), img / f"vital_{c}.png",
                      max(side, vital["plain"].shape[-1]))
    captions = []
    for kind, title in (("plain", "plain"), ("vital", "VITAL")):
        caption = f"{title}<br>activation {vital[f'activation/{kind}']:.4g}"
        if f"similarity/{kind}" in vital:
            caption += f"<br>probe similarity {vital[f'similarity/{kind}']:.3f}"
        captions.append(caption)
    ref = f"mean activation of the references: {vital['activation/reference']:.4g}"
    if "similarity/reference" in vital:
        ref += f"; their own probe similarity (leave-one-out): {vital['similarity/reference']:.3f}"
    grey = " Rendered in grey: the references are greyscale." if vital.get("grey") else ""
    return (f"<h2>Visualisations: plain channel visualisation and VITAL</h2>"
            f"{strip_html(f'img/vital_{c}.png', captions, size, 'plain and VITAL')}<p>{esc(ref)}.{grey}</p>")


def sams_section(img: Path, c: int, sams: np.ndarray | None, side: int, grey_images: bool) -> str:
    if sams is None:
        return ""
    size = save_strip(sams, img / f"sams_{c}.png", max(side, sams.shape[-1]))
    note = ""
    if grey_images and not is_grey(sams):
        note = ("<p>DORA's s-AMS are data-free (drawn from the model alone, which cannot tell that its data is "
                "greyscale), so they are in colour though this model's top images are greyscale.</p>")
    captions = [f"s-AMS {j + 1}" for j in range(len(sams))]
    return "<h2>DORA signal (s-AMS)</h2>" + strip_html(f"img/sams_{c}.png", captions, size, "s-AMS") + note


def home_page(model: str, summaries: list[LayerSummary], shared: dict[str, SharedImages]) -> str:
    def cell(value, total=None):
        return "" if value is None else f"{value}" + (f" of {total}" if total is not None else "")

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
