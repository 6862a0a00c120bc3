"""`peekflow plot-ood`: ROC curves and score histograms (PNG) of one OOD method's score file."""

from __future__ import annotations

import argparse
from pathlib import Path

from peekflow.cli import stage_main

HELP = """Plot the ROC curves (ID positive; FPR = OOD accepted, TPR = ID kept) and the score histograms of one
method's score file: the ID data set against every OOD data set, all in one figure each.

Example:
  peekflow plot-ood --scores results/ood/m/scores/knn.h5 --id shapes_val --ood novel_shapes textures noise \\
      --bins 60 --dpi 120 --out-roc results/ood/m/figures/knn_roc.png --out-hist results/ood/m/figures/knn_hist.png"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scores", required=True, help="score file (results/ood/<model>/scores/<method>.h5)")
    parser.add_argument("--id", required=True, dest="id_name", help="name of the ID data set in the score file")
    parser.add_argument("--ood", nargs="+", required=True, help="names of the OOD data sets")
    parser.add_argument("--bins", type=int, default=60, help="histogram bins shared by all sets (default 60)")
    parser.add_argument("--dpi", type=int, default=120, help="resolution of both PNGs (default 120)")
    parser.add_argument("--title", default=None, help="figure title (default: the score file's model and method)")
    parser.add_argument("--out-roc", required=True, help="ROC curve PNG to write")
    parser.add_argument("--out-hist", required=True, help="score histogram PNG to write")


def run(args: argparse.Namespace) -> None:
    from peekflow.io import open_complete_h5
    from peekflow.ood.plots import plot_histograms, plot_roc
    from peekflow.ood.scoring import read_scores

    if args.dpi < 1:
        raise ValueError(f"plot-ood: --dpi must be >= 1, got {args.dpi}")
    scores = read_scores(args.scores, [args.id_name, *args.ood])
    title = args.title
    if title is None:
        with open_complete_h5(args.scores, "score file", "rerun its scoring") as h5:
            model, method = str(h5.attrs.get("model", "")), str(h5.attrs.get("method", ""))
        run = Path(args.scores).stem  # the run's name (results/ood/<model>/scores/<run>.h5), e.g. vim_dim64
        run = run if run == method or not method else f"{run} ({method})"
        title = f"{model}: {run}" if model else run  # score files written before they named the model: the run
    plot_roc(scores, args.id_name, args.ood, args.out_roc, title=title, dpi=args.dpi)
    plot_histograms(scores, args.id_name, args.ood, args.out_hist, title=title, bins=args.bins, dpi=args.dpi)


if __name__ == "__main__":
    stage_main(__name__)
