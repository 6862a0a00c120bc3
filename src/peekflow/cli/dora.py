"""`peekflow dora`: DORA outlier neurons of one layer -> dora.csv (one row per neuron) and a figure; with --shard I/S
(S > 1), the signals of shard I of the neurons -> a signal file that `peekflow merge-dora` joins."""

from __future__ import annotations

from peekflow.cli import add_model_arguments, batch_plan, load_model, stage_main

HELP = """DORA: synthetic activation-maximisation signals (s-AMS) per neuron of a layer, the extreme-activation
distance between neurons, and outlier neurons by LocalOutlierFactor.

Writes a CSV (neuron, lof, outlier, rank, x, y, self_activation; most outlying first) and a PNG (map + s-AMS).
Example:
  peekflow dora --model '{"name": "m", "arch": "small_resnet", "num_classes": 10, ...}' \\
      --checkpoint results/models/m/model.pt --layer layer4 --settings '{"steps": 48}' \\
      --out results/neurons/m/layer4/dora.csv --figure results/neurons/m/layer4/dora.png
With --shard 1/4, --out is the signal file of the second of 4 contiguous ranges of render batches; a killed job
resumes from <out>.partial/; `peekflow merge-dora --shards <4 files> --out dora.csv` gives the one-job CSV."""


def add_arguments(p) -> None:
    from peekflow.neurons.dora import DoraSettings

    add_model_arguments(p, DoraSettings, shard="render only shard I of S of the neurons' batches into the signal "
                                               "file --out")
    p.add_argument("--layer", required=True, help="module name of the layer whose channels are the neurons")
    p.add_argument("--out", required=True, help="CSV to write (with --shard I/S, S > 1: the shard's signal file)")
    p.add_argument("--figure", default=None, help="PNG to write")
    p.add_argument("--signals", default=None, help="the layer's signal file to write (every neuron's s-AMS, for the "
                                                   "neuron atlas); one-job runs")


def run(args) -> None:
    from dataclasses import asdict

    from peekflow.neurons.dora import DoraSettings, dora_neurons, dora_outliers, dora_signals
    from peekflow.neurons.dora_files import write_dora
    from peekflow.neurons.dora_shards import write_signals

    if args.shard[1] > 1 and (args.figure or args.signals):
        raise ValueError("--figure, --signals: a shard writes its signal file (--out) only; `peekflow merge-dora` "
                         "writes the figure and the layer's signal file")
    spec, settings, model, _ = load_model(args, DoraSettings)
    with batch_plan(args, model, settings, layer=args.layer) as plan:
        signals = dora_signals(model, args.layer, spec.preprocess(), settings, device=args.device, plan=plan)
        recorded = {"model": spec.name, "checkpoint": str(args.checkpoint), "layer": args.layer,
                    "dora": asdict(settings)}
        if args.shard[1] > 1:
            total = len(dora_neurons(model, args.layer, spec.preprocess(), settings, args.device)) * settings.per_neuron
            write_signals(args.out, signals, {**recorded, **plan.attrs(total, settings.batch_size)})
        else:
            write_dora(args.out, args.figure, dora_outliers(signals, args.layer, settings),
                       title=f"DORA: {spec.name} {args.layer}", signals=args.signals, settings=recorded)


if __name__ == "__main__":
    stage_main(__name__)
