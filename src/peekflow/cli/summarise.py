"""`peekflow summarise`: mean ± std over the replicas (training seeds, checkpoints) of each model."""

from __future__ import annotations

import argparse

from peekflow.cli import named_paths, stage_main

HELP = """Summarise over replicas (peekflow.summary): `--table` an OOD table (results/ood_table.csv), or `--reports`
per-replica JSON reports named REPLICA/WHAT=FILE (prototype quality: keys target_accuracy, probe_accuracy; probing:
accuracy, hungarian_accuracy; the judgements against WordNet: mantel_r, mantel_p) with the `--keys` to summarise;
with `--curve INDEX=COLUMN` the keys are curves over the report's list INDEX, summarised per value (one row each).
Examples:
  peekflow summarise --table results/ood_table.csv --out-csv results/ood_summary.csv --out-md results/ood_summary.md
  peekflow summarise --reports m@s1/deepdream=results/prototypes/m@s1/deepdream_quality.json ... \\
      --keys target_accuracy probe_accuracy --out-csv results/prototypes_summary.csv --out-md ...
  peekflow summarise --reports m@s1/probing:p=results/probing/m@s1/p/semantics.json ... --curve depths=depth \\
      --keys accuracy_by_depth chance_accuracy_by_depth --out-csv results/semantic_depths_summary.csv --out-md ..."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--table", help="the OOD table (CSV) to summarise")
    source.add_argument("--reports", nargs="+", metavar="REPLICA/WHAT=FILE", help="JSON reports, one per replica")
    parser.add_argument("--keys", nargs="+", help="numeric keys of the reports to summarise (with --reports)")
    parser.add_argument("--curve", metavar="INDEX=COLUMN", help="the keys are curves over the reports' list INDEX: "
                                                                "one row per value, in a column named COLUMN")
    parser.add_argument("--out-csv", required=True)
    parser.add_argument("--out-md", required=True)


def run(args: argparse.Namespace) -> None:
    import pandas as pd

    from peekflow.summary import curve_summary, ood_summary, report_summary, write_summary

    if args.table:
        table = pd.read_csv(args.table, dtype={"model": str}).fillna({"model": ""})
        write_summary(ood_summary(table), ["fpr95", "auroc"], args.out_csv, args.out_md)
        return
    if not args.keys:
        raise SystemExit("summarise: --reports needs --keys")
    reports = named_paths(args.reports, "--reports")
    if args.curve:
        index, sep, column = args.curve.partition("=")
        if not sep or not index or not column:
            raise SystemExit(f"summarise: --curve {args.curve!r}: expected INDEX=COLUMN, e.g. depths=depth")
        summary = curve_summary(reports, index, column, args.keys)
    else:
        summary = report_summary(reports, args.keys)
    write_summary(summary, args.keys, args.out_csv, args.out_md, digits=3)


if __name__ == "__main__":
    stage_main(__name__)
