"""The neuron atlas's page of a layer with DORA's outputs only -- the model's output layer, whose units are the
classes -- and the section that shows DORA's units judged against WordNet (dora_wordnet.json, peekflow.semantics) on
it and on a labelled layer's page (peekflow.neurons.atlas builds the rest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from peekflow.neurons.atlas import LayerInputs, _table, missing_note, page, read_sams
from peekflow.neurons.atlas_images import save_png
from peekflow.neurons.atlas_neuron import MIN_SIDE, esc
from peekflow.neurons.patch_files import patch_view


def wordnet_section(path: str | None) -> str:
    """DORA's evaluation against WordNet (dora_wordnet.json): the Mantel test of the units' EA distance against their
    WordNet distance."""
    if not path:
        return ""
    report = json.loads(Path(path).read_text())
    m = report["mantel"]
    kind = "every relabelling" if m["exact"] else f"{m['permutations']} random relabellings, seed {m['seed']}"
    left = f"; left out (their s-AMS did not raise them): {esc(report['left_out'])}" if report["left_out"] else ""
    return ("<h2>DORA's units against WordNet</h2><p>Mantel test of the extreme-activation distance of the "
            f"{m['n']} output units (the classes) against the WordNet distance of their classes: "
            f"<strong>r = {m['r']:.3f}</strong>, <strong>p = {m['p']:.3g}</strong> ({esc(m['method'])}, "
            f"{esc(m['alternative'])}, {esc(kind)}){left}. r &gt; 0: units DORA finds alike are classes WordNet puts "
            "close.</p>")


def dora_only_layer(folder: Path, model: str, layer: str, inputs: LayerInputs, missing: dict) -> int:
    """The page of a layer with DORA's outputs only (the output layer): the WordNet section and a table of units."""
    dora, sams = _table(inputs.dora), read_sams(inputs.dora_signals)
    classes = {}
    if inputs.dora_wordnet:
        report = json.loads(Path(inputs.dora_wordnet).read_text())
        classes = dict(zip(report["units"], report["classes"]))
    rows = []
    for r in (dora.itertuples() if dora is not None else []):
        c = int(r.neuron)
        cells = [c, classes.get(c, ""), f"{r.lof:.4g}", "yes" if r.outlier else "no", r.rank]
        image = ""
        if c in sams:
            side = max(MIN_SIDE // 2, sams[c].shape[-1])
            save_png(patch_view(sams[c][0], side), folder / "img" / f"c{c}_sams0.png")
            image = f'<img src="img/c{c}_sams0.png" loading="lazy" alt="s-AMS of unit {c}">'
        rows.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in cells) + f"<td>{image}</td></tr>")
    if inputs.dora_figure:
        shutil.copyfile(inputs.dora_figure, folder / "img" / "dora.png")
    head = "<tr><th>unit</th><th>class</th><th>LOF</th><th>outlier</th><th>rank</th><th>s-AMS</th></tr>"
    body = (f'<p><a href="../index.html">{esc(model)}</a>'
            + (' &middot; <a href="img/dora.png">DORA map and s-AMS</a>' if inputs.dora_figure else "")
            + f"</p><h1>{esc(layer)}: {len(rows)} units (DORA only: no top-N images or patches)</h1>"
            + missing_note(missing) + wordnet_section(inputs.dora_wordnet)
            + (f"<table>{head}{''.join(rows)}</table>" if rows else ""))
    (folder / "index.html").write_text(page(f"{model} {layer}: units", body))
    return len(rows)
