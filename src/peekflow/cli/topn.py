"""`peekflow topn`: per channel of a layer, the N images of a feature store with the highest spatial max."""

from __future__ import annotations

import logging

from peekflow.cli import stage_main

HELP = """Top-N images per channel of a layer, by spatial-max activation (maxact/<layer> of a feature store).

Streams the store in blocks of rows: memory O(channels x (N + block rows)), whatever the number of images.
Ties: higher activation first, equal activations by lower row index.
Writes an HDF5 file with `indices` [C,N] (rows of the store), `activations` [C,N] and `paths` [C,N].
Example:
  peekflow topn --store results/features/m/shapes_train.h5 --layer layer4 --n 16 --out results/neurons/m/layer4/topn.h5"""


def add_arguments(p) -> None:
    p.add_argument("--store", required=True, help="feature store (.h5) holding maxact/<layer>")
    p.add_argument("--layer", required=True, help="layer recorded in the store")
    p.add_argument("--n", type=int, required=True, help="images kept per channel")
    p.add_argument("--block-rows", type=int, default=4096, help="store rows read at a time (default 4096)")
    p.add_argument("--out", required=True, help="top-N file to write (.h5)")


def run(args) -> None:
    # numpy + h5py only: no torch import, so the job's memory is the top-N lists and one block of rows
    from peekflow.neurons.topn import top_n, write_topn

    result = top_n(args.store, args.layer, args.n, args.block_rows)
    write_topn(args.out, result)
    c, n = result.indices.shape
    logging.getLogger("peekflow").info("wrote %s: top %d of %d images for %d channels of %s", args.out, n,
                                       result.attrs["rows"], c, args.layer)


if __name__ == "__main__":
    stage_main(__name__)
