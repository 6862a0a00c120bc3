"""`peekflow merge-patches`: join the shard files of a sharded patch search into its patch folder."""

from __future__ import annotations

import logging

from peekflow.cli import stage_main

HELP = """Join the shard files of `peekflow patches --shard I/S` (given in shard order 0..S-1) into the patch folder of a
one-job run: patches.h5's data sets and the PNGs equal a one-job run's bit for bit (CPU)."""


def add_arguments(p) -> None:
    p.add_argument("--shards", nargs="+", required=True, help="shard files (.h5), shard 0 first")
    p.add_argument("--out", required=True, help="patch folder to write (replaced when complete)")


def run(args) -> None:
    from peekflow.neurons.patch_files import write_patch_folder
    from peekflow.neurons.patch_shards import merge_patch_shards

    patches, attrs = merge_patch_shards(args.shards)
    write_patch_folder(args.out, patches, attrs)
    logging.getLogger("peekflow").info("wrote %s: %d patches for each of %d channels of %s from %d shards", args.out,
                                       patches.rows.shape[1], len(patches.channels), attrs["layer"],
                                       len(args.shards))


if __name__ == "__main__":
    stage_main(__name__)
