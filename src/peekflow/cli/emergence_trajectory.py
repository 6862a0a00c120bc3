"""`peekflow emergence-trajectory`: a PGD attack on analysed images and the path of their embeddings per layer."""

from __future__ import annotations

import logging

from peekflow.cli import add_model_arguments, load_model, stage_main
from peekflow.settings import to_json

HELP = """Attack a few of the images an emergence analysis saw (L-inf PGD on the synthesis engine) and trace their
sample and regional embeddings and knowledge points step by step through every analysed layer; writes an HDF5 file
of the paths and a figure."""


def add_arguments(p) -> None:
    from peekflow.emergence.trajectory import TrajectorySettings

    add_model_arguments(p, TrajectorySettings)
    p.add_argument("--analysis", required=True, nargs="+", help="the emergence files (<layer>.h5), shallow to deep")
    p.add_argument("--dpi", type=int, default=120)
    p.add_argument("--out", required=True, help="trajectory file (.h5)")
    p.add_argument("--figure", required=True, help="trajectory figure (.png)")


def run(args) -> None:
    from peekflow.emergence.files import read_layer, write_trajectory
    from peekflow.emergence.plots import plot_trajectory
    from peekflow.emergence.trajectory import TrajectorySettings, adversarial_trajectory

    spec, settings, model, classes = load_model(args, TrajectorySettings)
    files = [read_layer(path) for path in args.analysis]
    if files[0].classes and files[0].classes != classes:
        raise ValueError(f"{args.analysis[0]} analysed a model with classes {files[0].classes[:4]}..., but "
                         f"{args.checkpoint} has {classes[:4]}...: rerun the analysis on this checkpoint")
    trace = adversarial_trajectory(model, spec.preprocess(), files, settings, device=args.device)
    layers = [f.layer for f in files]
    write_trajectory(args.out, trace, layers, files[0].classes, spec.name, to_json(settings))
    plot_trajectory(args.figure, layers, trace["sample"], [f.mixture.directions.numpy() for f in files],
                    trace["toward_true"], trace["toward_other"], trace["true_prob"], files[0].classes,
                    title=f"PGD (eps {settings.eps:g}, {settings.steps} steps of {settings.alpha:g}) on "
                          f"{len(trace['picks'])} images of {spec.name}", dpi=args.dpi)
    final = trace["true_prob"][-1]
    logging.getLogger("peekflow").info("trajectory: probability of the true class %s -> %s; knowledge points toward "
                                       "it per layer %s -> %s", trace["true_prob"][0].round(3), final.round(3),
                                       trace["toward_true"][:, 0].tolist(), trace["toward_true"][:, -1].tolist())


if __name__ == "__main__":
    stage_main(__name__)
