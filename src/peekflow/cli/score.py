"""`peekflow score`: fit one OOD detector and score feature stores into one score file (higher = more ID)."""

from __future__ import annotations

import argparse

from peekflow.cli import add_device_argument, named_paths, stage_main
from peekflow.device import set_threads
from peekflow.settings import json_object

HELP = """Fit an OOD detector (on the ID training store or a prototype bank, if it needs one) and score feature
stores -- or, for methods that run the model on images (odin), image folders.

Writes one HDF5 file with a float64 data set per NAME; higher score = more in-distribution, for every method.
Examples:
  peekflow score --method knn --settings '{"k": 50}' --layer layer4 \\
      --fit-store results/features/m/shapes_train.h5 \\
      --eval shapes_val=results/features/m/shapes_val.h5 --eval textures=results/features/m/textures.h5 \\
      --out results/ood/m/scores/knn.h5
  peekflow score --method odin --settings '{"temperature": 1000, "epsilon": 0.0014}' \\
      --model '{"name": "m", "arch": "small_resnet", ...}' --checkpoint results/models/m/model.pt \\
      --images shapes_val=resources/datasets/shapes/val --images textures=resources/datasets/textures/test \\
      --out results/ood/m/scores/odin.h5"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="registered OOD method (msp, energy, knn, ...)")
    parser.add_argument("--settings", default="{}", help="JSON object of the method's settings (default: {})")
    parser.add_argument("--layer", default=None, help="the model's penultimate layer (methods that use features)")
    parser.add_argument("--fit-store", default=None, help="ID training feature store (methods that need fitting)")
    parser.add_argument("--eval", action="append", metavar="NAME=STORE",
                        help="data set name and its feature store; repeat for each data set")
    images = parser.add_argument_group("methods that run the model on images (odin) or read its weights "
                                       "(bn_gaussian)")
    images.add_argument("--images", action="append", metavar="NAME=FOLDER",
                        help="data set name and its image folder (<folder>/<class>/<image>); repeat for each")
    images.add_argument("--model", help="model spec as JSON: name, arch, num_classes, preprocessing, ...")
    images.add_argument("--checkpoint", help="model weights (peekflow checkpoint or a state dict)")
    add_device_argument(images)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (and faiss)")
    parser.add_argument("--out", required=True, help="score file to write (.h5)")


def run(args: argparse.Namespace) -> None:
    from peekflow.ood.base import detector_class
    from peekflow.ood.scoring import score_images, score_stores

    set_threads(args.threads)  # before torch or faiss is imported (only some methods import them)
    settings = json_object(args.settings, "--settings")
    cls = detector_class(args.method)
    if not cls.needs_images:
        if args.images or not args.eval:
            raise ValueError(f"OOD method {args.method!r} scores feature stores: give --eval NAME=STORE "
                             "(not --images)")
        model = None
        if cls.needs_model:
            if not (args.model and args.checkpoint):
                raise ValueError(f"OOD method {args.method!r} derives its fit from the model: give --model and "
                                 "--checkpoint")
            from peekflow.models.spec import ModelSpec, load_spec
            from peekflow.settings import parse_settings

            model, _ = load_spec(parse_settings(ModelSpec, args.model, "--model"), args.checkpoint)
        score_stores(args.method, settings, args.layer, args.fit_store, named_paths(args.eval, "--eval"), args.out,
                     model=model, checkpoint=args.checkpoint or "")
        return
    if args.eval or not (args.images and args.model and args.checkpoint):
        raise ValueError(f"OOD method {args.method!r} runs the model on images: give --images NAME=FOLDER, --model "
                         "and --checkpoint (not --eval)")
    from peekflow.device import resolve_device
    from peekflow.models.spec import ModelSpec, load_spec
    from peekflow.settings import parse_settings

    spec = parse_settings(ModelSpec, args.model, "--model")
    model, _classes = load_spec(spec, args.checkpoint)
    preprocessing = spec.preprocess()
    score_images(args.method, settings, model, preprocessing, named_paths(args.images, "--images"),
                 resolve_device(args.device), args.out, checkpoint=args.checkpoint, model_name=spec.name,
                 model_notes=spec.notes(preprocessing.as_dict()))


if __name__ == "__main__":
    stage_main(__name__)
