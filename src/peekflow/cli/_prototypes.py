"""What the prototype sub-commands (`peekflow dream`, `deepinversion`, `caricature`) share: their arguments, the
job's batch plan, and making, writing and drawing a prototype file. Not a sub-command itself."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from peekflow.cli import add_device_argument, add_settings_argument, shard_arg
from peekflow.device import resolve_device, set_threads
from peekflow.models.checkpoint import weights_digest
from peekflow.models.spec import ModelSpec, load_spec
from peekflow.prototypes.grids import write_grid
from peekflow.prototypes.shards import BatchPlan
from peekflow.prototypes.store import write_prototypes
from peekflow.settings import parse_settings


def add_prototype_arguments(p, settings_cls, method: str) -> None:
    p.add_argument("--checkpoint", required=True, help="model weights (peekflow checkpoint or a state dict)")
    p.add_argument("--model", required=True, help="model spec as JSON: name, arch, num_classes, preprocessing, ...")
    add_settings_argument(p, settings_cls)
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--shard", default="0/1", type=shard_arg,
                   help="render only shard I of S (I/S): a contiguous range of the batches, joined by peekflow "
                        "merge-prototypes into the one-job file; a killed job resumes from <out>.partial")
    p.add_argument("--out", required=True, help=f"prototype file to write, e.g. results/prototypes/<model>/{method}.h5")
    p.add_argument("--grid", default=None, help="PNG grid of the prototypes, one row per class")
    p.add_argument("--grid-classes", type=int, default=32, help="classes shown in the grid (the first ones)")


def batch_plan(args, model, classes: list[str], settings) -> BatchPlan:
    """The job's shard (--shard) and its `<out>.partial`, valid for these weights, classes, settings and device."""
    key = {"model weights": weights_digest(model), "classes": classes,
           "settings": settings if isinstance(settings, dict) else asdict(settings),
           "shard": list(args.shard), "device": str(resolve_device(args.device))}
    return BatchPlan(shard=args.shard, partial=Path(args.out).with_name(Path(args.out).name + ".partial"), key=key)


def run_prototypes(args, settings_cls, make) -> None:
    """Make the prototypes of the model (`make(model, classes, preprocessing, settings, ...)`), write them, draw
    their grid."""
    set_threads(args.threads)
    spec = parse_settings(ModelSpec, args.model, "--model")
    settings = parse_settings(settings_cls, args.settings, "--settings")
    model, classes = load_spec(spec, args.checkpoint)
    plan = batch_plan(args, model, classes, settings)
    protos = make(model, classes, spec.preprocess(), settings, name=spec.name, device=args.device, plan=plan)
    protos.settings["checkpoint"] = str(args.checkpoint)
    write_prototypes(args.out, protos)
    plan.partial.unlink(missing_ok=True)  # the finished batches are in the file now
    if args.grid:
        write_grid(args.grid, protos, args.grid_classes)
    logging.getLogger("peekflow").info("wrote %s: %d %s prototypes of %d classes, mean final loss %.4g", args.out,
                                       len(protos.targets), protos.method, len(set(protos.targets.tolist())),
                                       float(np.mean(protos.losses)))
