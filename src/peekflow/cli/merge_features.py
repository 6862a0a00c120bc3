"""`peekflow merge-features`: join the shard stores of a sharded extraction into one feature store."""

from __future__ import annotations

import logging

from peekflow.cli import stage_main
from peekflow.features.shards import merge_shards

HELP = """Join the shard stores of `peekflow extract --shard I/S` (given in shard order 0..S-1) into one feature store,
equal to an unsharded extraction's: the same rows in the same order, data sets and attributes."""


def add_arguments(p) -> None:
    p.add_argument("--shards", nargs="+", required=True, help="shard stores (.h5), shard 0 first")
    p.add_argument("--out", required=True, help="the feature store (.h5) to write")


def run(args) -> None:
    rows = merge_shards(args.shards, args.out)
    logging.getLogger("peekflow").info("wrote %s: %d rows from %d shards", args.out, rows, len(args.shards))


if __name__ == "__main__":
    stage_main(__name__)
