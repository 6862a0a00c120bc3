"""The atlas's neuron page: its labels, its top-N images with the patch boxes drawn over them, its patches, VITAL and
the s-AMS. Top-N images and patches are views of the shared images (atlas_images): the boxes are CSS frames over an
image, a patch a CSS crop of one (`background-position`), so a neuron adds no image file of its own for them; a token
layer's patch is the crop of the token's context with the token framed. VITAL and the s-AMS are one strip each."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from peekflow.neurons.atlas_images import SharedImages, is_grey, save_strip
from peekflow.neurons.patches import Patches
from peekflow.neurons.topn import TopN

MIN_SIDE = 128  # top-N images are shown at least this wide (enlarged by the browser, pixelated)


def esc(value) -> str:
    return html.escape(str(value), quote=True)


@dataclass
class LayerView:
    """What every neuron page of a layer reads."""

    folder: Path  # <out>/<layer>
    model: str
    layer: str
    topn: TopN
    patches: Patches
    marks: np.ndarray | None  # token layers: each patch's token inside its context (patches.token_marks)
    side: int  # px of a patch as shown
    images: SharedImages
    order: list[int]  # the neurons with pages, in page order
    has_figure: bool = False  # the layer's dora.png is in img/
    info: dict = field(default_factory=dict)  # the patch folder's info


def _frame(t, left, b, r, height, width) -> str:
    return (f'<span style="top:{100 * t / height:.3f}%;left:{100 * left / width:.3f}%;height:'
            f'{100 * (b - t) / height:.3f}%;width:{100 * (r - left) / width:.3f}%"></span>')


def boxed_html(src: str, width: int, height: int, boxes, caption: str, alt: str) -> str:
    """A shared image shown at least MIN_SIDE px wide, each box (top, left, bottom, right) framed over it by CSS."""
    shown = max(MIN_SIDE, width)
    return (f'<figure><div class="boxed"><img src="{src}" loading="lazy" width="{shown}" '
            f'height="{round(shown * height / width)}" alt="{esc(alt)}">'
            f'{"".join(_frame(*box, height, width) for box in boxes)}</div><figcaption>{caption}</figcaption></figure>')


def crop_html(src: str, width: int, height: int, region, side: int, caption: str, mark=None) -> str:
    """The `region` (top, left, bottom, right) of a shared `width` x `height` image, its longer side shown `side`
    px (a CSS crop: no file of its own), `mark` (in the region's pixels) framed."""
    t, left, b, r = (int(v) for v in region)
    scale = side / max(b - t, r - left)
    frame = "" if mark is None else _frame(*mark, b - t, r - left)
    smooth = "" if scale >= 1 else "image-rendering:auto;"
    return (f'<figure><div class="crop" style="width:{(r - left) * scale:.0f}px;height:{(b - t) * scale:.0f}px;'
            f"{smooth}background-image:url({src});background-size:{width * scale:.2f}px {height * scale:.2f}px;"
            f'background-position:{0 - left * scale:.2f}px {0 - t * scale:.2f}px">{frame}</div>'
            f"<figcaption>{caption}</figcaption></figure>")


def strip_html(src: str, captions: list[str], size: tuple[int, int], alt: str) -> str:
    """One strip image (save_strip) with a caption under each of its cells."""
    w, h = size
    n = len(captions)
    caps = "".join(f'<span style="width:{w}px;margin-right:{4 if j < n - 1 else 0}px">{c}</span>'
                   for j, c in enumerate(captions))
    return (f'<div><img src="{src}" loading="lazy" width="{n * (w + 4) - 4}" height="{h}" alt="{esc(alt)}">'
            f'<div class="caps">{caps}</div></div>')


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


def patches_html(view: LayerView, s: int) -> str:
    """The neuron's patches as crops of the shared top-N images (a token layer's: its context, the token framed)."""
    p, token = view.patches, view.info.get("token")
    out = []
    for j, (path, box, act) in enumerate(zip(p.paths[s], p.boxes[s], p.activations[s])):
        name, width, height = view.images.get(str(path))
        region, mark = box, None
        if view.marks is not None:  # the context window around the token: the token's box less its place in it
            mark = view.marks[s, j]
            top, left = box[0] - mark[0], box[1] - mark[1]
            region = (top, left, top + token["context"][0], left + token["context"][1])
        out.append(crop_html(f"../images/{name}", width, height, region, view.side, f"{act:.4g}", mark))
    what = (f"<p>Token layer: each patch is the token's {token['cell'][0]} px cell (framed) with "
            f"{token['context'][0]} px of context.</p>" if token else "")
    return f"<h2>Top-{len(out)} patches</h2>{what}{''.join(out)}"


def neuron_body(view: LayerView, c: int, s: int, dora_row, invert_row, near, vital, sams) -> str:
    top = []
    for j, (row, path, act) in enumerate(zip(view.topn.indices[c], view.topn.paths[c], view.topn.activations[c])):
        name, width, height = view.images.get(str(path))
        top.append(boxed_html(f"../images/{name}", width, height, view.patches.boxes[s][view.patches.rows[s] == row],
                              f"{act:.4g}<br>{esc(Path(path).name)}", f"top image {j + 1}"))
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                    for k, v in label_rows(dora_row, invert_row)) or "<tr><td>not labelled</td></tr>"
    pages = set(view.order)
    links = " ".join((f'<a href="neuron_{n}.html" title="neuron {n}"><img src="img/thumb_{n}.png" loading="lazy" '
                      f'width="32" height="32" alt="neuron {n}"> {n}</a>' if n in pages else str(n)) + f" ({d:.3g})"
                     for n, d in near)
    at = view.order.index(c)
    step = " ".join(f'<a href="neuron_{view.order[i]}.html">{label}</a>' for i, label in
                    ((at - 1, "&larr; previous"), (at + 1, "next &rarr;")) if 0 <= i < len(view.order))
    img = view.folder / "img"
    return (f'<p><a href="../index.html">{esc(view.model)}</a> &rsaquo; <a href="index.html">{esc(view.layer)}</a> '
            f"&rsaquo; neuron {c} &nbsp; {step}</p><h1>{esc(view.layer)}, neuron {c}</h1><table>{table}</table>"
            + (f"<p>Nearest neurons in DORA's 2-D map (distance in the map): {links}</p>" if near else "")
            + ('<p><a href="img/dora.png">DORA map and s-AMS of the layer</a></p>' if view.has_figure else "")
            + f"<h2>Top-{len(top)} images (patch boxes in yellow)</h2>{''.join(top)}" + patches_html(view, s)
            + vital_section(img, c, vital, view.side) + sams_section(img, c, sams, view.side, view.images.grey))


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
