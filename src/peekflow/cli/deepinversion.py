"""`peekflow deepinversion`: DeepInversion class prototypes of a model -> prototype file (.h5) and grid (.png)."""

from __future__ import annotations

from peekflow.cli import stage_main
from peekflow.cli._prototypes import add_prototype_arguments, run_prototypes
from peekflow.prototypes.deepinversion import InversionSettings, make_deepinversion

HELP = ("DeepInversion class prototypes (Yin et al., CVPR 2020): cross-entropy plus batch-norm statistics matching, "
        "with jitter, flip and image priors.")


def add_arguments(p) -> None:
    add_prototype_arguments(p, InversionSettings, "deepinversion")


def run(args) -> None:
    run_prototypes(args, InversionSettings, make_deepinversion)


if __name__ == "__main__":
    stage_main(__name__)
