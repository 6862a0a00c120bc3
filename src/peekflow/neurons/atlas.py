"""The neuron atlas: a static site (results/atlas/<model>/, opened from the file system, no server, no network) built
from a layer's existing neuron outputs -- top-N images (topn.h5), top-k patches (patches/patches.h5), and, where the
layer is labelled, DORA (dora.csv, dora.png) and INVERT (invert.csv).

<out>/index.html                  the layers
<out>/<layer>/index.html          a grid of the layer's neurons (those with patches), one lazy-loaded thumbnail each
                                  (the best patch, `thumb` px), filtered by INVERT formula text and DORA outlier flag
<out>/<layer>/neuron_<c>.html     the top-N images (model input view) with the neuron's patch boxes drawn on them,
                                  the patches, LOF score / flag / rank, INVERT formula / AUC / p-value, and the
                                  nearest neurons in DORA's 2-D map (dora.csv holds MDS coordinates of the
                                  extreme-activation distances, not the distances: neighbours are by distance in that
                                  map), the neuron's s-AMS (DORA's signal file), and a link to the layer's DORA figure
<out>/<layer>/img/*.png           every image as a PNG file beside the pages (none inlined)

The model's output layer, where DORA's units (the classes) are judged against WordNet (dora_wordnet.json, semantics),
gets a layer page of its own without top-N images or patches (peekflow.neurons.atlas_units): the Mantel test's r and
p above a table of its units -- class, LOF score, outlier flag, rank, s-AMS -- and DORA's figure.

Where the layer has VITAL (vital.h5), a neuron page shows its plain and VITAL visualisations with their activation
and probe similarity. A partial run builds too: an input that does not exist yet is named on the pages it would fill
("not built yet"), and a layer without top-N images or patches gets an index page saying so and no neuron pages.

All text is escaped (html.escape). The folder is built under a temporary name and renamed when whole.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from peekflow.data.folder import Preprocessing
from peekflow.io import atomic_folder
from peekflow.neurons.patch_files import read_patches
from peekflow.neurons.topn import read_topn

THUMB = 64  # px of an index thumbnail: a 2,048-neuron index stays light (and its thumbnails load lazily)
NEIGHBOURS = 6
MIN_SIDE = 128  # top-N images smaller than this are enlarged (nearest) so their boxes stay visible
STYLE = ("body{font-family:sans-serif;margin:1em}img{image-rendering:pixelated}.grid{display:flex;flex-wrap:wrap;"
         "gap:6px}.n{display:inline-block;text-align:center;font-size:11px;text-decoration:none;color:#222}"
         ".n.out{outline:2px solid #c00}figure{display:inline-block;margin:4px}td,th{padding:2px 8px;text-align:left}")
FILTER_JS = """
function applyFilter() {
  var q = document.getElementById('concept').value.toLowerCase();
  var only = document.getElementById('outliers').checked;
  var shown = 0;
  document.querySelectorAll('.n').forEach(function (e) {
    var ok = e.getAttribute('data-concept').indexOf(q) >= 0 && (!only || e.getAttribute('data-outlier') === '1');
    e.style.display = ok ? '' : 'none';
    if (ok) shown++;
  });
  document.getElementById('shown').textContent = shown;
}
document.getElementById('concept').addEventListener('input', applyFilter);
document.getElementById('outliers').addEventListener('change', applyFilter);
"""


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


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def save_png(array: np.ndarray, path: Path, side: int | None = None) -> None:
    """[3,h,w] uint8 -> PNG; resized to `side` px (nearest when enlarging) if given."""
    img = Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)))
    if side:
        img = img.resize((side, side), Image.NEAREST if max(img.size) <= side else Image.BILINEAR)
    img.save(path, optimize=True)


def boxed_image(path: str, preprocessing: Preprocessing, boxes) -> Image.Image:
    """The model's view of an image (resize/crop, no normalisation) with `boxes` (top, left, bottom, right) drawn."""
    with Image.open(path) as src:
        pixels = preprocessing.pixels(src.convert("RGB"))
    img = Image.fromarray((pixels.mul(255).round().byte().permute(1, 2, 0).numpy()))
    scale = max(1, -(-MIN_SIDE // max(img.size)))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for t, left, b, r in boxes:
        draw.rectangle([left * scale, t * scale, r * scale - 1, b * scale - 1], outline=(255, 255, 0), width=2)
    return img


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
        counts = {layer: build_layer(tmp / layer, model, layer, inputs, thumb) for layer, inputs in layers.items()}
        items = "".join(f'<li><a href="{esc(layer)}/index.html">{esc(layer)}</a> ({n} neurons)</li>'
                        for layer, n in counts.items())
        (tmp / "index.html").write_text(page(f"{model}: neuron atlas",
                                             f"<h1>Neuron atlas of {esc(model)}</h1><ul>{items}</ul>"))
    return counts


def _table(path: str | None) -> pd.DataFrame | None:
    return pd.read_csv(path) if path else None


def missing_note(missing: dict[str, str]) -> str:
    if not missing:
        return ""
    items = ", ".join(f"{esc(k)} ({esc(v)})" for k, v in missing.items())
    return f'<p class="missing">Not built yet, so not shown: {items}.</p>'


def build_layer(folder: Path, model: str, layer: str, inputs: LayerInputs, thumb: int) -> int:
    from peekflow.neurons.atlas_units import dora_only_layer, wordnet_section

    (folder / "img").mkdir(parents=True)
    missing = inputs.missing()
    if inputs.topn is None and inputs.patches is None:
        present = LayerInputs(**{k: (None if k in missing else v) for k, v in vars(inputs).items()})
        return dora_only_layer(folder, model, layer, present, missing)
    if "topn" in missing or "patches" in missing or not (inputs.topn and inputs.patches):
        body = (f'<p><a href="../index.html">{esc(model)}</a></p><h1>{esc(layer)}: no neurons yet</h1>'
                + missing_note(missing))
        (folder / "index.html").write_text(page(f"{model} {layer}: neurons", body))
        return 0
    inputs = LayerInputs(**{k: (None if k in missing else v) for k, v in vars(inputs).items()})
    topn, (patches, _) = read_topn(inputs.topn), read_patches(inputs.patches)
    preprocessing = Preprocessing(**json.loads(topn.attrs["preprocessing"]))
    dora, invert = _table(inputs.dora), _table(inputs.invert)
    vital = read_vital_images(inputs.vital)
    sams = read_sams(inputs.dora_signals)
    dora_rows = {int(r.neuron): r for r in dora.itertuples()} if dora is not None else {}
    invert_rows = {int(r.neuron): r for r in invert.itertuples()} if invert is not None else {}
    near = neighbours(dora)
    pages = {int(c) for c in patches.channels}
    if inputs.dora_figure:
        shutil.copyfile(inputs.dora_figure, folder / "img" / "dora.png")
    cells = []
    for s, c in enumerate(patches.channels):
        c = int(c)
        save_png(patches.pixels[s, 0], folder / "img" / f"thumb_{c}.png", thumb)
        d, i = dora_rows.get(c), invert_rows.get(c)
        concept = "" if i is None or pd.isna(i.formula) else str(i.formula)
        outlier = d is not None and bool(d.outlier)
        cells.append(f'<a class="n{" out" if outlier else ""}" href="neuron_{c}.html" data-concept="{esc(concept.lower())}"'
                     f' data-outlier="{int(outlier)}" title="{esc(concept)}"><img src="img/thumb_{c}.png" '
                     f'loading="lazy" width="{thumb}" height="{thumb}" alt="neuron {c}"><br>{c}</a>')
        neuron_page(folder, model, layer, c, s, topn, patches, preprocessing, d, i, near.get(c, []), pages,
                    bool(inputs.dora_figure), vital.get(c), missing_note(missing), sams.get(c))
    dora_link = ' &middot; <a href="img/dora.png">DORA map and s-AMS</a>' if inputs.dora_figure else ""
    body = (f'<p><a href="../index.html">{esc(model)}</a>{dora_link}</p><h1>{esc(layer)}: {len(cells)} neurons</h1>'
            '<p><input id="concept" type="search" placeholder="INVERT concept contains..."> '
            '<label><input id="outliers" type="checkbox"> DORA outliers only</label> '
            f'<span id="shown">{len(cells)}</span> shown</p>{missing_note(missing)}'
            f'{wordnet_section(inputs.dora_wordnet)}'
            f'<div class="grid">{"".join(cells)}</div><script>{FILTER_JS}</script>')
    (folder / "index.html").write_text(page(f"{model} {layer}: neurons", body))
    return len(cells)


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

    data, _ = read_vital(path)
    out = {}
    for s, c in enumerate(data["channels"]):
        values = {key: float(v[s]) for key, v in data.items() if key.startswith(("activation/", "similarity/"))}
        out[int(c)] = {"plain": data["plain"][s], "vital": data["vital"][s], **values}
    return out


def vital_section(img: Path, c: int, vital: dict | None) -> str:
    if vital is None:
        return ""
    figures = []
    for kind, title in (("plain", "plain channel visualisation"), ("vital", "VITAL")):
        save_png(vital[kind], img / f"c{c}_{kind}.png", max(MIN_SIDE // 2, vital[kind].shape[-1]))
        caption = f"{title}<br>activation {vital[f'activation/{kind}']:.4g}"
        if f"similarity/{kind}" in vital:
            caption += f"<br>probe similarity {vital[f'similarity/{kind}']:.3f}"
        figures.append(f'<figure><img src="img/c{c}_{kind}.png" loading="lazy" alt="{esc(title)}">'
                       f"<figcaption>{caption}</figcaption></figure>")
    ref = f"mean activation of the patches: {vital['activation/reference']:.4g}"
    if "similarity/reference" in vital:
        ref += f"; their own probe similarity (leave-one-out): {vital['similarity/reference']:.3f}"
    return f"<h2>Visualisations</h2>{''.join(figures)}<p>{esc(ref)}</p>"


def neuron_page(folder, model, layer, c, s, topn, patches, preprocessing, dora_row, invert_row, near, pages,
                has_figure, vital=None, note="", sams=None) -> None:
    img = folder / "img"
    signal = ""
    if sams is not None:
        for j, sam in enumerate(sams):
            save_png(sam, img / f"c{c}_sams{j}.png", max(MIN_SIDE // 2, sam.shape[-1]))
        signal = ("<h2>DORA signal (s-AMS)</h2>" + "".join(
            f'<figure><img src="img/c{c}_sams{j}.png" loading="lazy" alt="s-AMS {j + 1}"></figure>'
            for j in range(len(sams))))
    top = []
    for j, (row, path, act) in enumerate(zip(topn.indices[c], topn.paths[c], topn.activations[c])):
        boxes = patches.boxes[s][patches.rows[s] == row]
        boxed_image(path, preprocessing, boxes).save(img / f"c{c}_top{j}.png", optimize=True)
        top.append(f'<figure><img src="img/c{c}_top{j}.png" loading="lazy" alt="top image {j + 1}">'
                   f"<figcaption>{act:.4g}<br>{esc(Path(path).name)}</figcaption></figure>")
    side = max(MIN_SIDE // 2, *patches.pixels.shape[-2:])
    crops = []
    for j, act in enumerate(patches.activations[s]):
        save_png(patches.pixels[s, j], img / f"c{c}_patch{j}.png", side)
        crops.append(f'<figure><img src="img/c{c}_patch{j}.png" loading="lazy" alt="patch {j + 1}">'
                     f"<figcaption>{act:.4g}</figcaption></figure>")
    rows = []
    if invert_row is not None:
        formula = "(none)" if pd.isna(invert_row.formula) else invert_row.formula
        rows += [("INVERT formula", formula), ("INVERT AUC", f"{invert_row.auc:.4g}"),
                 ("INVERT p-value", f"{invert_row.p_value:.3g}")]
    if dora_row is not None:
        rows += [("DORA LOF score", f"{dora_row.lof:.4g}"), ("DORA outlier", "yes" if dora_row.outlier else "no"),
                 ("DORA rank", dora_row.rank), ("s-AMS raised the neuron", "yes" if dora_row.activated else "no")]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) or "<tr><td>not labelled</td></tr>"
    links = ", ".join((f'<a href="neuron_{n}.html">{n}</a>' if n in pages else str(n)) + f" ({dist:.3g})"
                      for n, dist in near)
    body = (f'<p><a href="index.html">{esc(model)} {esc(layer)}</a></p><h1>{esc(layer)}, neuron {c}</h1>'
            f"<table>{table}</table>{note}"
            + (f"<p>Nearest neurons in DORA's 2-D map (distance in the map): {links}</p>" if near else "")
            + ('<p><a href="img/dora.png">DORA map and s-AMS of the layer</a></p>' if has_figure else "")
            + f"<h2>Top-{len(top)} images (patch boxes in yellow)</h2>{''.join(top)}"
            + f"<h2>Top-{len(crops)} patches</h2>{''.join(crops)}" + vital_section(img, c, vital) + signal)
    (folder / f"neuron_{c}.html").write_text(page(f"{model} {layer} neuron {c}", body))


def page_weight(folder) -> dict:
    """Bytes of HTML and of images under an atlas folder, and of one layer index with its thumbnails."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    html_bytes = sum(p.stat().st_size for p in files if p.suffix == ".html")
    image_bytes = sum(p.stat().st_size for p in files if p.suffix == ".png")
    return {"files": len(files), "html_bytes": html_bytes, "image_bytes": image_bytes}
