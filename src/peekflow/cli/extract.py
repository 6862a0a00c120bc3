"""`peekflow extract`: a model's logits and pooled layer activations over one image folder -> HDF5 feature store."""

from __future__ import annotations

import logging

from peekflow.cli import stage_main
from peekflow.device import resolve_device, set_threads
from peekflow.features.extract import ExtractSettings, extract_features
from peekflow.models.spec import ModelSpec, load_spec
from peekflow.settings import describe, parse_settings

HELP = "Extract logits and layer features of a model over an image folder into an HDF5 feature store."


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="model weights (peekflow checkpoint or a state dict)")
    p.add_argument("--model", required=True, help="model spec as JSON: name, arch, num_classes, preprocessing, ...")
    p.add_argument("--images", required=True, help="image folder: <images>/<class>/<file>")
    p.add_argument("--dataset-name", required=True, help="data set name recorded in the store")
    p.add_argument("--settings", default="{}", help="JSON settings:\n" + describe(ExtractSettings))
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", required=True, help="the feature store (.h5) to write")


def run(args) -> None:
    set_threads(args.threads)
    spec = parse_settings(ModelSpec, args.model, "--model")
    settings = parse_settings(ExtractSettings, args.settings, "--settings")
    model, classes = load_spec(spec, args.checkpoint)
    device = resolve_device(settings.device)
    preprocessing = spec.preprocess()
    attrs = {
        "model": spec.name,
        "arch": spec.arch,
        "checkpoint": str(args.checkpoint),
        "classes": classes,
        "dataset": args.dataset_name,
        "images": str(args.images),
        "preprocessing": preprocessing.as_dict(),
        "layers": settings.layers,
    }
    summary = extract_features(model, args.images, classes, preprocessing, settings, device, args.out, attrs)
    logging.getLogger("peekflow").info(
        "wrote %s: %d images on %s, %d skipped", args.out, summary["rows"], device, len(summary["skipped"])
    )


if __name__ == "__main__":
    stage_main(__name__)
