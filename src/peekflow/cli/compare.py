"""`peekflow compare`: the OOD table set beside published tables (results/paper_comparison.csv and .md)."""

from __future__ import annotations

import argparse

from peekflow.cli import add_settings_argument, named_paths, stage_main
from peekflow.ood.papers import CompareSettings

HELP = """Set each value of published OOD tables (peekflow/ood/published/<paper>.yaml) beside the run's: the run's value
for the same method, settings and data set (or group average), its 95% bootstrap interval, run - published and
whether the published value lies inside that interval. Published values the run lacks and runs the paper lacks are
listed, not dropped.
Example:
  peekflow compare --table results/ood_table.csv --scores resnet50/msp=results/ood/resnet50/scores/msp.h5 \\
      --settings '{"papers": ["peek_imagenet_resnet50"]}' \\
      --out-csv results/paper_comparison.csv --out-md results/paper_comparison.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", required=True, help="the OOD table (CSV of `peekflow table`)")
    parser.add_argument("--scores", action="append", required=True, metavar="[MODEL/]RUN=FILE",
                        help="each run's score file (its method and settings as scored); repeat for each")
    parser.add_argument("--group", action="append", default=[], metavar="NAME=SET,SET",
                        help="the run's groups of OOD sets, as given to `peekflow table`; repeat")
    add_settings_argument(parser, CompareSettings, required=True)
    parser.add_argument("--out-csv", required=True, help="comparison CSV to write")
    parser.add_argument("--out-md", required=True, help="comparison markdown to write")


def run(args: argparse.Namespace) -> None:
    import json

    import pandas as pd

    from peekflow.io import open_complete_h5
    from peekflow.ood.papers import compare, write_comparison
    from peekflow.settings import parse_settings

    settings = parse_settings(CompareSettings, args.settings)
    runs = {}
    for key, path in named_paths(args.scores, "--scores").items():
        with open_complete_h5(path, "score file", "rerun its scoring") as h5:
            runs[key.rpartition("/")[2]] = (str(h5.attrs["method"]), json.loads(h5.attrs.get("settings", "{}")))
    groups = {name: sets.split(",") for name, sets in named_paths(args.group, "--group").items()}
    table = pd.read_csv(args.table)
    write_comparison(compare(table, runs, settings.papers, settings.sets, groups), args.out_csv, args.out_md)


if __name__ == "__main__":
    stage_main(__name__)
