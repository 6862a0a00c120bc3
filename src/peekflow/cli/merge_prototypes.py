"""`peekflow merge-prototypes`: join the shard files of a sharded prototype synthesis into one prototype file."""

from __future__ import annotations

import logging

from peekflow.cli import stage_main
from peekflow.prototypes.grids import write_caricature_grid, write_grid
from peekflow.prototypes.store import merge_prototype_shards, write_prototypes

HELP = """Join the shard files of `peekflow dream|deepinversion --shard I/S` (given in shard order 0..S-1) into one
prototype file, equal to a one-job run's (the same images, targets, losses and settings), and draw its grid
(of caricatures: each reference beside its caricature, which needs --model for the references' preprocessing)."""


def add_arguments(p) -> None:
    p.add_argument("--shards", nargs="+", required=True, help="shard prototype files (.h5), shard 0 first")
    p.add_argument("--out", required=True, help="the prototype file (.h5) to write")
    p.add_argument("--grid", default=None, help="PNG grid of the prototypes, one row per class")
    p.add_argument("--model", default=None, help="model spec as JSON (a caricature grid: its preprocessing)")
    p.add_argument("--grid-classes", type=int, default=32, help="classes shown in the grid (the first ones)")


def run(args) -> None:
    protos = merge_prototype_shards(args.shards)
    write_prototypes(args.out, protos)
    if args.grid and protos.method == "caricature":
        from peekflow.models.spec import ModelSpec
        from peekflow.settings import parse_settings

        if args.model is None:
            raise ValueError("--grid of caricatures needs --model (the references' preprocessing)")
        spec = parse_settings(ModelSpec, args.model, "--model")
        write_caricature_grid(args.grid, protos, spec.preprocess(), args.grid_classes)
    elif args.grid:
        write_grid(args.grid, protos, args.grid_classes)
    logging.getLogger("peekflow").info("wrote %s: %d prototypes from %d shards", args.out, len(protos.targets),
                                       len(args.shards))


if __name__ == "__main__":
    stage_main(__name__)
