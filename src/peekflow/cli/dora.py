"""`peekflow dora`: DORA outlier neurons of one layer -> dora.csv (one row per neuron) and a figure."""

from __future__ import annotations

import logging

from peekflow.cli import add_device_argument, add_settings_argument, stage_main

HELP = """DORA: synthetic activation-maximisation signals (s-AMS) per neuron of a layer, the extreme-activation
distance between neurons, and outlier neurons by LocalOutlierFactor.

Writes a CSV (neuron, lof, outlier, rank, x, y, self_activation; most outlying first) and a PNG (map + s-AMS).
Example:
  peekflow dora --model '{"name": "m", "arch": "small_resnet", "num_classes": 10, ...}' \\
      --checkpoint results/models/m/model.pt --layer layer4 --settings '{"steps": 48}' \\
      --out results/neurons/m/layer4/dora.csv --figure results/neurons/m/layer4/dora.png"""


def add_arguments(p) -> None:
    from peekflow.neurons.dora import DoraSettings

    p.add_argument("--model", required=True, help="model spec as JSON: name, arch, num_classes, preprocessing, ...")
    p.add_argument("--checkpoint", required=True, help="model weights (peekflow checkpoint or a state dict)")
    p.add_argument("--layer", required=True, help="module name of the layer whose channels are the neurons")
    add_settings_argument(p, DoraSettings)
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--figure", default=None, help="PNG to write")


def run(args) -> None:
    from peekflow.device import set_threads
    from peekflow.io import atomic_path
    from peekflow.models.spec import ModelSpec, load_spec
    from peekflow.neurons.dora import DoraSettings, dora_table, run_dora
    from peekflow.neurons.label_figures import plot_dora
    from peekflow.settings import parse_settings

    set_threads(args.threads)
    spec = parse_settings(ModelSpec, args.model, "--model")
    settings = parse_settings(DoraSettings, args.settings, "--settings")
    model, _ = load_spec(spec, args.checkpoint)
    result = run_dora(model, args.layer, spec.preprocess(), settings, device=args.device)
    table = dora_table(result)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    if args.figure:
        plot_dora(args.figure, result, title=f"DORA: {spec.name} {args.layer}")
    flagged = table.loc[table["outlier"], "neuron"].tolist()
    logging.getLogger("peekflow").info("wrote %s: %d neurons, %d LOF outliers %s; most outlying: %s", args.out,
                                       len(table), len(flagged), flagged[:10], table["neuron"].head(5).tolist())


if __name__ == "__main__":
    stage_main(__name__)
