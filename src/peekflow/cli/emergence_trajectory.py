"""`peekflow emergence-trajectory`: a PGD attack on analysed images and the path of their embeddings per layer."""

from __future__ import annotations

import dataclasses
import json
import logging

from peekflow.cli import stage_main
from peekflow.device import set_threads
from peekflow.settings import describe, parse_settings

HELP = """Attack a few of the images an emergence analysis saw (L-inf PGD on the synthesis engine) and trace their
sample and regional embeddings and knowledge points step by step through every analysed layer; writes an HDF5 file
of the paths and a figure."""


def add_arguments(p) -> None:
    from peekflow.emergence.trajectory import TrajectorySettings

    p.add_argument("--model", required=True, help="model spec as JSON (the analysed model)")
    p.add_argument("--checkpoint", required=True, help="model weights")
    p.add_argument("--analysis", required=True, nargs="+", help="the emergence files (<layer>.h5), shallow to deep")
    p.add_argument("--settings", default="{}", help="JSON settings:\n" + describe(TrajectorySettings))
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--dpi", type=int, default=120)
    p.add_argument("--out", required=True, help="trajectory file (.h5)")
    p.add_argument("--figure", required=True, help="trajectory figure (.png)")


def run(args) -> None:
    import h5py

    from peekflow.emergence.files import read_layer
    from peekflow.emergence.plots import plot_trajectory
    from peekflow.emergence.trajectory import TrajectorySettings, adversarial_trajectory
    from peekflow.io import atomic_path
    from peekflow.models.spec import ModelSpec, load_spec

    set_threads(args.threads)
    settings = parse_settings(TrajectorySettings, args.settings, "--settings")
    spec = parse_settings(ModelSpec, args.model, "--model")
    model, classes = load_spec(spec, args.checkpoint)
    files = [read_layer(path) for path in args.analysis]
    if files[0].classes and files[0].classes != classes:
        raise ValueError(f"{args.analysis[0]} analysed a model with classes {files[0].classes[:4]}..., but "
                         f"{args.checkpoint} has {classes[:4]}...: rerun the analysis on this checkpoint")
    trace = adversarial_trajectory(model, spec.preprocess(), files, settings)
    layers = [f.layer for f in files]
    with atomic_path(args.out) as tmp, h5py.File(tmp, "w") as h5:
        for key in ("picks", "rows", "labels", "logits", "sample", "regions", "kp_mask", "kp_class", "toward_true",
                    "toward_other", "true_prob", "adversarial"):
            h5.create_dataset(key, data=trace[key])
        h5.create_dataset("paths", data=trace["paths"], dtype=h5py.string_dtype("utf-8"))
        h5.attrs.update({"layers": json.dumps(layers), "classes": json.dumps(files[0].classes), "model": spec.name,
                         "settings": json.dumps(dataclasses.asdict(settings), sort_keys=True)})
        h5.attrs["complete"] = True
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
