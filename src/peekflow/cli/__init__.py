"""`peekflow <stage>`: one sub-command per workflow stage, each a thin wrapper around one library function.

Every stage module in this package defines `HELP`, `add_arguments(parser)` and `run(args)`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from peekflow.progress import setup_logging

STAGES = ["generate", "train", "extract", "score", "table"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peekflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGES:
        module = importlib.import_module(f"peekflow.cli.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_stage(args._run, args)


def run_stage(fn, args) -> int:
    setup_logging()
    try:
        fn(args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, ImportError) as err:
        # Expected failures (bad input, bad settings): one clear line, no traceback noise.
        logging.getLogger("peekflow").error("%s", err)
        print(f"peekflow {getattr(args, 'stage', '')}: error: {err}", file=sys.stderr)
        return 1
    return 0


def stage_main(module_name: str) -> None:
    """`python -m peekflow.cli.<stage>` entry."""
    if module_name == "__main__":  # run as `python -m peekflow.cli.<stage>`
        module_name = sys.modules["__main__"].__spec__.name
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m {module_name}", description=module.HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args()
    sys.exit(run_stage(module.run, args))
