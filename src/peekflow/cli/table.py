"""`peekflow table`: the OOD table (CSV + markdown) from score files, one row per (method, OOD data set)."""

from __future__ import annotations

import argparse

from peekflow.cli import named_paths, stage_main

HELP = """Compute AUROC, FPR@95 (classic and OpenOOD), AUPR-In/Out for every method and OOD data set, with 95%
percentile-bootstrap confidence intervals of AUROC and FPR@95 and the methods' k / bank / T / eps settings (CSV),
and a paper-style markdown table (methods as rows, FPR95/AUROC per OOD set, per group of sets and their average).

Score files must hold the ID data set and every OOD data set; higher score = more in-distribution.
Example:
  peekflow table --scores msp=results/ood/m/scores/msp.h5 --scores energy=results/ood/m/scores/energy.h5 \\
      --id shapes_val --ood novel_shapes textures noise \\
      --n-bootstrap 1000 --seed 0 --out-csv results/ood_table.csv --out-md results/ood_table.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scores", action="append", required=True, metavar="[MODEL/]METHOD=FILE",
                        help="model and method name and their score file; repeat for each (rows keep this order)")
    parser.add_argument("--id", required=True, dest="id_name", help="name of the ID data set in the score files")
    parser.add_argument("--ood", nargs="+", required=True, help="names of the OOD data sets")
    parser.add_argument("--group", action="append", default=[], metavar="NAME=SET,SET",
                        help="a group of OOD sets (e.g. near=novel_shapes): an average_NAME row per method; repeat")
    parser.add_argument("--n-bootstrap", type=int, default=1000,
                        help="bootstrap resamples for the confidence intervals (0: no intervals; default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default 0)")
    parser.add_argument("--out-csv", required=True, help="CSV table to write")
    parser.add_argument("--out-md", default=None, help="markdown table to write (optional)")


def run(args: argparse.Namespace) -> None:
    from peekflow.ood.table import build_table, write_table

    groups = {name: sets.split(",") for name, sets in named_paths(args.group, "--group").items()}
    df = build_table(named_paths(args.scores, "--scores"), args.id_name, args.ood, args.n_bootstrap, args.seed, groups)
    write_table(df, args.out_csv, args.out_md)


if __name__ == "__main__":
    stage_main(__name__)
