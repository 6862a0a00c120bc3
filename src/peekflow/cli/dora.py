"""`peekflow dora`: DORA outlier neurons of one layer -> dora.csv (one row per neuron) and a figure; with --shard I/S
(S > 1), the signals of shard I of the neurons -> a signal file that `peekflow merge-dora` joins."""

from __future__ import annotations

from peekflow.cli import add_device_argument, add_settings_argument, shard_arg, stage_main

HELP = """DORA: synthetic activation-maximisation signals (s-AMS) per neuron of a layer, the extreme-activation
distance between neurons, and outlier neurons by LocalOutlierFactor.

Writes a CSV (neuron, lof, outlier, rank, x, y, self_activation; most outlying first) and a PNG (map + s-AMS).
Example:
  peekflow dora --model '{"name": "m", "arch": "small_resnet", "num_classes": 10, ...}' \\
      --checkpoint results/models/m/model.pt --layer layer4 --settings '{"steps": 48}' \\
      --out results/neurons/m/layer4/dora.csv --figure results/neurons/m/layer4/dora.png
With --shard 1/4, --out is the signal file of the second of 4 contiguous ranges of render batches; a killed job
resumes from <out>.partial; `peekflow merge-dora --shards <4 files> --out dora.csv` gives the one-job CSV."""


def add_arguments(p) -> None:
    from peekflow.neurons.dora import DoraSettings

    p.add_argument("--model", required=True, help="model spec as JSON: name, arch, num_classes, preprocessing, ...")
    p.add_argument("--checkpoint", required=True, help="model weights (peekflow checkpoint or a state dict)")
    p.add_argument("--layer", required=True, help="module name of the layer whose channels are the neurons")
    add_settings_argument(p, DoraSettings)
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--shard", default="0/1", type=shard_arg,
                   help="render only shard I of S (I/S) of the neurons' batches into the signal file --out")
    p.add_argument("--out", required=True, help="CSV to write (with --shard I/S, S > 1: the shard's signal file)")
    p.add_argument("--figure", default=None, help="PNG to write")
    p.add_argument("--signals", default=None, help="the layer's signal file to write (every neuron's s-AMS, for the "
                                                   "neuron atlas); one-job runs")


def run(args) -> None:
    from dataclasses import asdict
    from pathlib import Path

    from peekflow.device import resolve_device, set_threads
    from peekflow.models.checkpoint import weights_digest
    from peekflow.models.spec import ModelSpec, load_spec
    from peekflow.neurons.dora import DoraSettings, dora_neurons, dora_outliers, dora_signals
    from peekflow.neurons.dora_files import write_dora
    from peekflow.neurons.dora_shards import write_signals
    from peekflow.prototypes.shards import BatchPlan
    from peekflow.settings import parse_settings

    set_threads(args.threads)
    spec = parse_settings(ModelSpec, args.model, "--model")
    settings = parse_settings(DoraSettings, args.settings, "--settings")
    if args.shard[1] > 1 and (args.figure or args.signals):
        raise ValueError("--figure, --signals: a shard writes its signal file (--out) only; `peekflow merge-dora` "
                         "writes the figure and the layer's signal file")
    model, _ = load_spec(spec, args.checkpoint)
    key = {"model weights": weights_digest(model), "layer": args.layer, "settings": asdict(settings),
           "shard": list(args.shard), "device": str(resolve_device(args.device))}
    partial = Path(args.out).with_name(Path(args.out).name + ".partial")
    plan = BatchPlan(shard=args.shard, partial=partial, key=key)
    signals = dora_signals(model, args.layer, spec.preprocess(), settings, device=args.device, plan=plan)
    if args.shard[1] > 1:
        total = len(dora_neurons(model, args.layer, spec.preprocess(), settings, args.device)) * settings.per_neuron
        recorded = {"model": spec.name, "checkpoint": str(args.checkpoint), "layer": args.layer,
                    "dora": asdict(settings), **plan.attrs(total, settings.batch_size)}
        write_signals(args.out, signals, recorded)
    else:
        write_dora(args.out, args.figure, dora_outliers(signals, args.layer, settings),
                   title=f"DORA: {spec.name} {args.layer}", signals=args.signals,
                   settings={"model": spec.name, "checkpoint": str(args.checkpoint), "layer": args.layer,
                             "dora": asdict(settings)})
    partial.unlink(missing_ok=True)  # the finished batches are in the output now


if __name__ == "__main__":
    stage_main(__name__)
