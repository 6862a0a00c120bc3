"""`peekflow gather-scores`: join the score files of one OOD method on different data sets into one score file."""

from __future__ import annotations

import argparse

from peekflow.cli import stage_main

HELP = """Join score files of one OOD method (the workflow writes one per data set) into the score file that
`peekflow table` and `peekflow plot-ood` read. The parts must be complete and agree on method, settings, layer, fit
store (and checkpoint, for methods that run the model); each data set name may appear in one part only.
Example:
  peekflow gather-scores --parts results/ood/m/scores/knn/shapes_val.h5 results/ood/m/scores/knn/textures.h5 \\
      --out results/ood/m/scores/knn.h5"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", nargs="+", required=True, help="score files (.h5) of one method")
    parser.add_argument("--out", required=True, help="score file to write (.h5)")


def run(args: argparse.Namespace) -> None:
    from peekflow.ood.scoring import gather_scores

    gather_scores(args.parts, args.out)


if __name__ == "__main__":
    stage_main(__name__)
