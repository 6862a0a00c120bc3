"""`peekflow score`: fit one OOD detector and score feature stores into one score file (higher = more ID)."""

from __future__ import annotations

import argparse

from peekflow.cli import stage_main
from peekflow.settings import json_object

HELP = """Fit an OOD detector (on the ID training store, if it needs one) and score feature stores.

Writes one HDF5 file with a float64 data set per NAME; higher score = more in-distribution, for every method.
Example:
  peekflow score --method knn --settings '{"k": 50}' --layer layer4 \\
      --fit-store results/features/m/shapes_train.h5 \\
      --eval shapes_val=results/features/m/shapes_val.h5 --eval textures=results/features/m/textures.h5 \\
      --out results/ood/m/scores/knn.h5"""


def named_paths(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """['name=path', ...] -> {name: path}; fail naming the flag on a malformed or repeated name."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} {pair!r}: expected NAME=PATH")
        if name in out:
            raise ValueError(f"{flag}: name {name!r} given twice")
        out[name] = path
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="registered OOD method (msp, energy, knn, ...)")
    parser.add_argument("--settings", default="{}", help="JSON object of the method's settings (default: {})")
    parser.add_argument("--layer", default=None, help="the model's penultimate layer (methods that use features)")
    parser.add_argument("--fit-store", default=None, help="ID training feature store (methods that need fitting)")
    parser.add_argument("--eval", action="append", required=True, metavar="NAME=STORE",
                        help="data set name and its feature store; repeat for each data set")
    parser.add_argument("--out", required=True, help="score file to write (.h5)")


def run(args: argparse.Namespace) -> None:
    from peekflow.ood.scoring import score_stores

    settings = json_object(args.settings, "--settings")
    score_stores(args.method, settings, args.layer, args.fit_store, named_paths(args.eval, "--eval"), args.out)


if __name__ == "__main__":
    stage_main(__name__)
