"""`peekflow caricature`: caricatures of real images by a model -> prototype file (.h5) and grid (.png)."""

from __future__ import annotations

import logging

import numpy as np

from peekflow.cli import batch_plan, load_model, stage_main
from peekflow.cli._prototypes import add_prototype_arguments
from peekflow.prototypes.caricature import CaricatureSettings, make_caricatures
from peekflow.prototypes.grids import write_caricature_grid
from peekflow.prototypes.store import write_prototypes

HELP = """Caricatures: optimise images so that a layer's response matches, amplified, its response to real reference
images (per_class seeded images per class of --images). The grid shows each reference beside its caricature."""


def add_arguments(p) -> None:
    add_prototype_arguments(p, CaricatureSettings, "caricature")
    p.add_argument("--images", required=True, help="image folder (<class>/<image>) the references are drawn from")


def run(args) -> None:
    spec, settings, model, classes = load_model(args, CaricatureSettings)
    with batch_plan(args, model, settings, classes=classes, images=str(args.images)) as plan:
        protos = make_caricatures(model, classes, spec.preprocess(), settings, args.images, name=spec.name,
                                  device=args.device, plan=plan)
        protos.settings["checkpoint"] = str(args.checkpoint)
        write_prototypes(args.out, protos)
        if args.grid:
            write_caricature_grid(args.grid, protos, spec.preprocess(), args.grid_classes)
    logging.getLogger("peekflow").info("wrote %s: %d caricatures at layer %s, mean final loss %.4g", args.out,
                                       len(protos.targets), settings.layer, float(np.mean(protos.losses)))


if __name__ == "__main__":
    stage_main(__name__)
