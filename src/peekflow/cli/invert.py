"""`peekflow invert`: INVERT concept formulas for the neurons of one layer -> invert.csv and a figure."""

from __future__ import annotations

import logging

from peekflow.cli import add_settings_argument, stage_main

HELP = """INVERT: label each neuron of a layer with the boolean formula (AND / OR / NOT) over the concepts of an
attributes table (column=value) whose truth best ranks the neuron's activations (AUC), by beam search, with a
one-sided Mann-Whitney U p-value.

The activations come from a feature store (maxact/<layer> or features/<layer>); its images are matched to the rows of
attributes.csv by their path relative to the csv's folder.
Writes a CSV (neuron, formula, auc, p_value, length, fraction) and a PNG of the best-labelled neurons.
Example:
  peekflow invert --store results/features/m/shapes_val.h5 --attributes resources/datasets/shapes/attributes.csv \\
      --layer layer4 --settings '{"beam_size": 5, "max_length": 3}' \\
      --out results/neurons/m/layer4/invert.csv --figure results/neurons/m/layer4/invert.png"""


def add_arguments(p) -> None:
    from peekflow.neurons.invert import InvertSettings

    p.add_argument("--store", required=True, help="feature store (.h5) holding the layer's activations")
    p.add_argument("--attributes", required=True, help="attributes.csv of the store's images (path + concepts)")
    p.add_argument("--layer", required=True, help="layer whose channels are the neurons")
    add_settings_argument(p, InvertSettings)
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--figure", default=None, help="PNG to write")


def run(args) -> None:
    from peekflow.io import atomic_path
    from peekflow.neurons.invert import InvertSettings, run_invert
    from peekflow.neurons.label_figures import plot_invert
    from peekflow.settings import parse_settings

    settings = parse_settings(InvertSettings, args.settings, "--settings")
    table = run_invert(args.store, args.attributes, args.layer, settings)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    if args.figure:
        from peekflow.cli import store_model

        model = store_model(args.store)
        plot_invert(args.figure, table, title=f"INVERT: {model + ' ' if model else ''}{args.layer} ({len(table)} "
                    "neurons)")
    good = table[table["auc"] > 0.9]
    logging.getLogger("peekflow").info("wrote %s: %d neurons, %d with AUC > 0.9; best: %s", args.out, len(table),
                                       len(good), table.sort_values("auc").tail(3)[["neuron", "formula", "auc"]]
                                       .to_dict("records"))


if __name__ == "__main__":
    stage_main(__name__)
