"""`peekflow atlas`: the neuron atlas of a model -> a static site (index per layer, a page per neuron)."""

from __future__ import annotations

import json
import logging

from peekflow.cli import stage_main

HELP = """The neuron atlas: a static site, opened from the file system, built from a model's neuron outputs.

--layers is a JSON object: layer -> {"topn": topn.h5, "patches": patch folder, and optionally "dora": dora.csv,
"dora_figure": dora.png, "dora_signals": dora_signals.h5, "dora_wordnet": dora_wordnet.json, "invert": invert.csv,
"vital": vital.h5}; a layer without "topn" and "patches" (the output layer, DORA only) gets a page of its units and
their Mantel test against WordNet; an input that does not exist yet is named on the pages instead (a partial run).
Writes <out>/index.html (home: the layers with their counts, the most outlying neurons, the best INVERT labels),
<out>/<layer>/index.html (a grid of neurons with their INVERT labels and DORA outlier marks, sorted and filtered in
the page), <out>/<layer>/neuron_<c>.html, the neurons' thumbnails and image strips under <out>/<layer>/img/ and
every top-N image once under <out>/images/.
Example:
  peekflow atlas --model m --layers '{"layer4": {"topn": "results/neurons/m/layer4/topn.h5",
      "patches": "results/neurons/m/layer4/patches", "invert": "results/neurons/m/layer4/invert.csv"}}' \\
      --out results/atlas/m"""


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model name (page titles)")
    p.add_argument("--layers", required=True, help="JSON object: layer -> its input files (see above)")
    p.add_argument("--thumb", type=int, default=64, help="side of an index thumbnail in pixels")
    p.add_argument("--out", required=True, help="atlas folder to write (replaced when complete)")


def run(args) -> None:
    from peekflow.neurons.atlas import LayerInputs, build_atlas, page_weight

    layers = {name: LayerInputs(**files) for name, files in json.loads(args.layers).items()}
    counts = build_atlas(args.out, args.model, layers, thumb=args.thumb)
    logging.getLogger("peekflow").info("wrote %s: neurons per layer %s; %s", args.out, json.dumps(counts),
                                       json.dumps(page_weight(args.out)))


if __name__ == "__main__":
    stage_main(__name__)
