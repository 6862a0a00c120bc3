"""`peekflow train`: train a classifier on an image folder; writes a peekflow checkpoint and metrics.json."""

from __future__ import annotations

import dataclasses
import logging

from peekflow.cli import add_device_argument, add_settings_argument, stage_main
from peekflow.device import resolve_device, set_threads
from peekflow.io import write_json
from peekflow.models.checkpoint import save_checkpoint
from peekflow.models.spec import ModelSpec
from peekflow.settings import parse_settings
from peekflow.models.training import TrainSettings, train_classifier

HELP = "Train a classifier from scratch on an image folder (<dir>/<class>/<image>)."


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model spec as JSON: name, arch, num_classes, preprocessing, ...")
    p.add_argument("--train-images", required=True, help="training image folder")
    p.add_argument("--val-images", required=True, help="validation image folder (the ID test set)")
    add_settings_argument(p, TrainSettings)
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out-checkpoint", required=True)
    p.add_argument("--out-metrics", required=True)


def run(args) -> None:
    set_threads(args.threads)
    spec = parse_settings(ModelSpec, args.model, "--model")
    settings = parse_settings(TrainSettings, args.settings, "--settings")
    device = resolve_device(args.device)
    model, classes, metrics = train_classifier(spec, args.train_images, args.val_images, settings, device)
    save_checkpoint(args.out_checkpoint, model, spec.arch, classes, spec.arch_kwargs,
                    preprocessing=spec.preprocessing, train_settings=dataclasses.asdict(settings))
    metrics["classes"] = classes
    write_json(args.out_metrics, metrics)
    logging.getLogger("peekflow").info("val accuracy %.4f -> %s", metrics["val_accuracy"], args.out_checkpoint)


if __name__ == "__main__":
    stage_main(__name__)
