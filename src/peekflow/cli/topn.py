"""`peekflow topn`: per channel of a layer, the N images of a feature store with the highest spatial max (or, with
rank_by relevance, the highest relevance to the explained class)."""

from __future__ import annotations

import logging

from peekflow.cli import stage_main

HELP = """Top-N images per channel of a layer, by spatial-max activation (maxact/<layer> of a feature store).

Streams the store in blocks of rows: memory O(channels x (N + block rows)), whatever the number of images.
Ties: higher activation first, equal activations by lower row index.
Writes an HDF5 file with `indices` [C,N] (rows of the store), `activations` [C,N] (the ranking values) and
`paths` [C,N].
With --settings '{"rank_by": "relevance"}' (and --model, --checkpoint): Relevance Maximisation (Achtibat et al.
2023): the store's images are run through the model and each channel is scored by its relevance (LRP, zennit) to
the explained class, summed over its positions; `activations` then holds those relevances (attribute rank_by).
Example:
  peekflow topn --store results/features/m/shapes_train.h5 --layer layer4 --n 16 --out results/neurons/m/layer4/topn.h5"""


def add_arguments(p) -> None:
    p.add_argument("--store", required=True, help="feature store (.h5) holding maxact/<layer>")
    p.add_argument("--layer", required=True, help="layer recorded in the store")
    p.add_argument("--n", type=int, required=True, help="images kept per channel")
    p.add_argument("--block-rows", type=int, default=4096, help="store rows read at a time (default 4096)")
    from peekflow.cli import add_device_argument, add_settings_argument
    from peekflow.neurons.topn import RankSettings

    add_settings_argument(p, RankSettings)
    p.add_argument("--model", default=None, help="rank_by relevance: model spec as JSON")
    p.add_argument("--checkpoint", default=None, help="rank_by relevance: model weights")
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="rank_by relevance: CPU threads for torch")
    p.add_argument("--out", required=True, help="top-N file to write (.h5)")


def run(args) -> None:
    from peekflow.neurons.topn import top_n, write_topn

    from peekflow.neurons.topn import RankSettings
    from peekflow.settings import parse_settings

    if parse_settings(RankSettings, args.settings, "--settings").rank_by == "activation":
        # numpy + h5py only: no torch import, so the job's memory is the top-N lists and one block of rows
        result = top_n(args.store, args.layer, args.n, args.block_rows)
    else:
        result = relevance_top_n(args)
    write_topn(args.out, result)
    c, n = result.indices.shape
    logging.getLogger("peekflow").info("wrote %s: top %d of %d images for %d channels of %s", args.out, n,
                                       result.attrs["rows"], c, args.layer)


def relevance_top_n(args):
    from peekflow.device import resolve_device, set_threads
    from peekflow.models.spec import ModelSpec, load_spec
    from peekflow.neurons.relevance_rank import top_n_relevance
    from peekflow.neurons.topn import RankSettings
    from peekflow.settings import parse_settings

    settings = parse_settings(RankSettings, args.settings, "--settings")
    if not (args.model and args.checkpoint):
        raise ValueError("rank_by relevance runs the model: give --model and --checkpoint")
    set_threads(args.threads)
    spec = parse_settings(ModelSpec, args.model, "--model")
    model, _ = load_spec(spec, args.checkpoint)
    return top_n_relevance(args.store, args.layer, args.n, model, settings, resolve_device(args.device))


if __name__ == "__main__":
    stage_main(__name__)
