"""`peekflow dream`: PEEK's DeepDream class prototypes of a model -> prototype file (.h5) and grid (.png)."""

from __future__ import annotations

from peekflow.cli import stage_main
from peekflow.cli._prototypes import add_prototype_arguments, run_prototypes
from peekflow.prototypes.deepdream import DreamSettings, make_deepdream

HELP = "DeepDream class prototypes (PEEK): maximise each class logit under TV, L1-edge and L2-pixel penalties."


def add_arguments(p) -> None:
    add_prototype_arguments(p, DreamSettings, "deepdream")


def run(args) -> None:
    run_prototypes(args, DreamSettings, make_deepdream)


if __name__ == "__main__":
    stage_main(__name__)
