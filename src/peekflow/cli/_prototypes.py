"""What the prototype sub-commands (`peekflow dream`, `deepinversion`, `caricature`) share: their arguments and
making, writing and drawing a prototype file. Not a sub-command itself."""

from __future__ import annotations

import logging

import numpy as np

from peekflow.cli import add_model_arguments, batch_plan, load_model
from peekflow.prototypes.grids import write_grid
from peekflow.prototypes.store import write_prototypes


def add_prototype_arguments(p, settings_cls, method: str) -> None:
    add_model_arguments(p, settings_cls, shard="render only shard I of S: a contiguous range of the batches, joined "
                                               "by peekflow merge-prototypes into the one-job file")
    p.add_argument("--out", required=True, help=f"prototype file to write, e.g. results/prototypes/<model>/{method}.h5")
    p.add_argument("--grid", default=None, help="PNG grid of the prototypes, one row per class")
    p.add_argument("--grid-classes", type=int, default=32, help="classes shown in the grid (the first ones)")


def run_prototypes(args, settings_cls, make) -> None:
    """Make the prototypes of the model (`make(model, classes, preprocessing, settings, ...)`), write them, draw
    their grid."""
    spec, settings, model, classes = load_model(args, settings_cls)
    with batch_plan(args, model, settings, classes=classes) as plan:
        protos = make(model, classes, spec.preprocess(), settings, name=spec.name, device=args.device, plan=plan)
        protos.settings["checkpoint"] = str(args.checkpoint)
        write_prototypes(args.out, protos)
        if args.grid:
            write_grid(args.grid, protos, args.grid_classes)
    logging.getLogger("peekflow").info("wrote %s: %d %s prototypes of %d classes, mean final loss %.4g", args.out,
                                       len(protos.targets), protos.method, len(set(protos.targets.tolist())),
                                       float(np.mean(protos.losses)))
