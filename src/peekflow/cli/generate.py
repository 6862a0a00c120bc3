"""`peekflow generate`: write an embedded default data set (shapes, textures or noise) as an image folder."""

from __future__ import annotations

import logging

from peekflow.cli import add_settings_argument, stage_main
from peekflow.data.generate import KINDS, GenerateSettings, generate_dataset
from peekflow.data.shapes import DEFAULT_ID_SHAPES, DEFAULT_NEAR_OOD_SHAPES, SHAPE_NAMES
from peekflow.settings import parse_settings

HELP = "Generate a synthetic data set: <out>/<split>/<class>/<index>.png and <out>/attributes.csv (written last)."

EPILOG = f"""shape names: {', '.join(SHAPE_NAMES)}
default ID shapes: {', '.join(DEFAULT_ID_SHAPES)}
default near-OOD shapes: {', '.join(DEFAULT_NEAR_OOD_SHAPES)}
splits: images per class for kind=shapes, images in total for textures and noise."""


def add_arguments(p) -> None:
    p.epilog = EPILOG
    p.add_argument("--kind", required=True, choices=KINDS, help="shapes (ID / near OOD), textures, noise")
    p.add_argument("--out", required=True, help="data set folder (earlier images in it are replaced)")
    add_settings_argument(p, GenerateSettings, required=True)
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: available CPUs, at most 8); does not change the output")


def run(args) -> None:
    settings = parse_settings(GenerateSettings, args.settings, "--settings")
    table = generate_dataset(args.out, args.kind, settings, workers=args.workers)
    logging.getLogger("peekflow").info("wrote %d images and attributes.csv to %s", len(table), args.out)


if __name__ == "__main__":
    stage_main(__name__)
