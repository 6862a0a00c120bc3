"""The atlas's layer page: a grid of the layer's neurons, each its thumbnail, INVERT label and AUC, DORA outlier mark
and LOF score, which the reader sorts (neuron, INVERT AUC, DORA LOF, top activation: highest first, neurons without
the value last) and filters (label text, DORA outliers only, INVERT-labelled only) in the page, with no server."""

from __future__ import annotations

import pandas as pd

from peekflow.neurons.atlas_neuron import esc

SORTS = {"neuron": "neuron", "auc": "INVERT AUC (highest first)", "lof": "DORA LOF score (highest first)",
         "act": "top activation (highest first)"}
VIEW_JS = """
function num(e, key) { var v = parseFloat(e.getAttribute('data-' + key)); return isNaN(v) ? null : v; }
function applyView() {
  var q = document.getElementById('concept').value.toLowerCase();
  var only = document.getElementById('outliers').checked;
  var labelled = document.getElementById('labelled').checked;
  var key = document.getElementById('sort').value;
  var grid = document.getElementById('grid');
  var cells = [].slice.call(grid.querySelectorAll('.n'));
  cells.sort(function (a, b) {
    if (key !== 'neuron') {
      var x = num(a, key), y = num(b, key);
      if (x !== y) { if (x === null) return 1; if (y === null) return -1; return y - x; }
    }
    return num(a, 'neuron') - num(b, 'neuron');
  });
  var shown = 0;
  cells.forEach(function (e) {
    grid.appendChild(e);
    var concept = e.getAttribute('data-concept');
    var ok = concept.indexOf(q) >= 0 && (!only || e.getAttribute('data-outlier') === '1') &&
             (!labelled || concept !== '');
    e.style.display = ok ? '' : 'none';
    if (ok) shown++;
  });
  document.getElementById('shown').textContent = shown;
}
var applyFilter = applyView;
document.getElementById('concept').addEventListener('input', applyView);
['outliers', 'labelled', 'sort'].forEach(function (id) {
  document.getElementById(id).addEventListener('change', applyView);
});
"""


def _value(x) -> str:
    return "" if x is None or pd.isna(x) else f"{float(x):.6g}"


def grid_cell(c: int, dora_row, invert_row, top_act: float, thumb: int) -> str:
    formula = "" if invert_row is None or pd.isna(invert_row.formula) else str(invert_row.formula)
    auc = invert_row.auc if formula else None
    outlier = dora_row is not None and bool(dora_row.outlier)
    lof = None if dora_row is None else dora_row.lof
    label = (formula or "no INVERT label") if invert_row is not None else ""
    scores = " &middot; ".join(s for s in (f"AUC {auc:.3f}" if auc is not None else "",
                                           f"LOF {lof:.3g}" if lof is not None and not pd.isna(lof) else "") if s)
    mark = ' <b class="o">DORA outlier</b>' if outlier else ""
    title = "; ".join(s for s in (f"neuron {c}", formula and f"INVERT: {formula}", "DORA outlier" if outlier else "")
                      if s)
    return (f'<a class="n{" out" if outlier else ""}" href="neuron_{c}.html" data-neuron="{c}" '
            f'data-concept="{esc(formula.lower())}" data-auc="{_value(auc)}" data-lof="{_value(lof)}" '
            f'data-outlier="{int(outlier)}" data-act="{_value(top_act)}" title="{esc(title)}">'
            f'<img src="img/thumb_{c}.png" loading="lazy" width="{thumb}" height="{thumb}" alt="neuron {c}">'
            f'<span>{c}{mark}</span><span class="l">{esc(label)}</span><span>{scores}</span></a>')


def grid_page(model: str, layer: str, summary, top_act: dict[int, float], thumb: int, has_figure: bool,
              note: str) -> str:
    """The body of <layer>/index.html (summary: atlas.LayerSummary, its cells in neuron-page order)."""
    cells = [grid_cell(c, d, i, top_act[c], thumb) for c, d, i in summary.cells]
    have = {"neuron": True, "act": True, "auc": summary.labelled is not None, "lof": summary.outliers is not None}
    options = "".join(f'<option value="{key}"{"" if have[key] else " disabled"}>{esc(text)}</option>'
                      for key, text in SORTS.items())
    dora_link = ' &middot; <a href="img/dora.png">DORA map and s-AMS</a>' if has_figure else ""
    legend = []
    if summary.labelled is not None:
        legend.append(f"{summary.labelled} neurons with an INVERT label")
    if summary.outliers is not None:
        legend.append(f'{summary.outliers} DORA outliers (<span class="o">red frame</span>)')
    return (f'<p><a href="../index.html">{esc(model)}</a> &rsaquo; {esc(layer)}{dora_link}</p>'
            f"<h1>{esc(layer)}: {len(cells)} neurons</h1>"
            + (f"<p>{'; '.join(legend)}.</p>" if legend else "")
            + f'<p>Sort by <select id="sort">{options}</select> '
            '<input id="concept" type="search" placeholder="INVERT label contains..."> '
            '<label><input id="outliers" type="checkbox"> DORA outliers only</label> '
            '<label><input id="labelled" type="checkbox"> INVERT-labelled only</label> '
            f'<span id="shown">{len(cells)}</span> of {len(cells)} shown</p>{note}'
            f'<div class="grid" id="grid">{"".join(cells)}</div><script>{VIEW_JS}</script>')
