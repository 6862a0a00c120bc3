"""`peekflow merge-dora`: join the signal files of a sharded DORA run into its CSV and figure."""

from __future__ import annotations

from peekflow.cli import stage_main

HELP = """Join the signal files of `peekflow dora --shard I/S` (given in shard order 0..S-1) into the signals of a
one-job run, then compute distances, LOF outliers and the map: the CSV equals a one-job run's bit for bit."""


def add_arguments(p) -> None:
    p.add_argument("--shards", nargs="+", required=True, help="shard signal files (.h5), shard 0 first")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--figure", default=None, help="PNG to write")
    p.add_argument("--signals", default=None, help="the layer's joined signal file to write (for the neuron atlas)")


def run(args) -> None:
    from peekflow.neurons.dora import dora_outliers
    from peekflow.neurons.dora_files import write_dora
    from peekflow.neurons.dora_shards import dora_settings_of, merge_dora_shards

    signals, settings = merge_dora_shards(args.shards)
    result = dora_outliers(signals, settings["layer"], dora_settings_of(settings))
    recorded = {k: v for k, v in settings.items() if k != "shard"}
    write_dora(args.out, args.figure, result, title=f"DORA: {settings['model']} {settings['layer']}",
               signals=args.signals, settings=recorded)


if __name__ == "__main__":
    stage_main(__name__)
