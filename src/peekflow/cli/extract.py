"""`peekflow extract`: a model's logits and pooled layer activations over one image folder -> HDF5 feature store."""

from __future__ import annotations

import logging

from peekflow.cli import add_model_arguments, load_model, stage_main
from peekflow.device import resolve_device
from peekflow.features.extract import ExtractSettings, extract_dataset, extract_features
from peekflow.prototypes.images import PrototypeImages
from peekflow.prototypes.store import read_prototypes

HELP = """Extract logits and layer features of a model over an image folder into an HDF5 feature store -- or over
a prototype file (--prototypes: the images quantised to 8 bit and preprocessed like real ones; labels = targets)."""


def add_arguments(p) -> None:
    add_model_arguments(p, ExtractSettings, shard="extract only the I-th (from 0) of S contiguous parts of the sorted "
                                                  "image list (join them with peekflow merge-features)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="image folder: <images>/<class>/<file>")
    source.add_argument("--prototypes", help="prototype file (.h5) of this model (peekflow dream / deepinversion)")
    p.add_argument("--dataset-name", required=True, help="data set name recorded in the store")
    p.add_argument("--per-class", type=int, default=None, metavar="N",
                   help="--images only: extract a seeded subsample of N images per class (default: every image)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of that subsample (default 0)")
    p.add_argument("--out", required=True, help="the feature store (.h5) to write")


def run(args) -> None:
    spec, settings, model, classes = load_model(args, ExtractSettings)
    device = resolve_device(args.device)
    preprocessing = spec.preprocess()
    attrs = {
        "model": spec.name,
        "arch": spec.arch,
        "checkpoint": str(args.checkpoint),
        "classes": classes,
        "dataset": args.dataset_name,
        "images": str(args.images or args.prototypes),
        "preprocessing": preprocessing.as_dict(),
        "layers": settings.layers,
    }
    if settings.maps:
        attrs["maps"] = settings.maps
    notes = spec.notes(preprocessing.as_dict())
    if notes:  # e.g. the crop of a timm model's default preprocessing; the OOD scores and table repeat them
        attrs["notes"] = notes
    if args.images:
        sample = None if args.per_class is None else (args.per_class, args.sample_seed)
        summary = extract_features(model, args.images, classes, preprocessing, settings, device, args.out, attrs,
                                   shard=args.shard, sample=sample)
    else:
        if args.shard != (0, 1) or args.per_class is not None:
            raise ValueError("--shard and --per-class apply to --images only")
        protos = read_prototypes(args.prototypes)
        if protos.model != spec.name:
            raise ValueError(f"prototype file {args.prototypes} was made for model {protos.model!r}, not {spec.name!r}")
        dataset = PrototypeImages(protos, preprocessing)
        attrs["prototype_method"] = protos.method
        summary = extract_dataset(model, dataset, settings, device, args.out, attrs, source=args.prototypes,
                                  inputs=[file_digest(args.prototypes)])
    logging.getLogger("peekflow").info(
        "wrote %s: %d images on %s, %d skipped", args.out, summary["rows"], device, len(summary["skipped"])
    )


def file_digest(path) -> str:
    """SHA-256 of a file's bytes: what identifies the prototypes a resumed extraction continues on."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


if __name__ == "__main__":
    stage_main(__name__)
