"""Bootstrap confidence intervals of AUROC and FPR95: peekflow's vectorised resampling vs. a plain per-resample loop.

Baseline: for each resample, index the ID and OOD scores and call `peekflow.ood.metrics.ood_metrics` (scikit-learn's
roc_curve / roc_auc_score). peekflow: `bootstrap_metrics` (per-sample multiplicities under sorted scores, chunked).
Both see the same seeded resamples, and the script checks they agree. The loop is timed on `--loop-resamples`
resamples and scaled to `--resamples` (it is linear in the number of resamples).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from peekflow.ood.metrics import bootstrap_metrics, ood_metrics
from readme_section import command_line, write_section

README = Path(__file__).with_name("README.md")


def loop_baseline(s_id, s_ood, n, seed):
    id_rng, ood_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1, 0])
    out = {"auroc": [], "fpr95": []}
    for _ in range(n):
        m = ood_metrics(s_id[id_rng.integers(0, s_id.size, s_id.size)], s_ood[ood_rng.integers(0, s_ood.size, s_ood.size)])
        out["auroc"].append(m["auroc"])
        out["fpr95"].append(m["fpr95"])
    return {k: np.array(v) for k, v in out.items()}




def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["10000x10000", "50000x10000"], help="n_id x n_ood cases")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (the config's default)")
    p.add_argument("--loop-resamples", type=int, default=50, help="resamples the plain loop is timed on")
    p.add_argument("--write-readme", action="store_true", help=f"replace this benchmark's section in {README.name}")
    args = p.parse_args()

    rows = []
    for case in args.sizes:
        n_id, n_ood = (int(v) for v in case.split("x"))
        rng = np.random.default_rng(0)
        s_id, s_ood = rng.normal(1, 1, n_id), rng.normal(0, 1, n_ood)
        start = time.perf_counter()
        fast = bootstrap_metrics(s_id, s_ood, args.resamples, seed=0)
        t_fast = time.perf_counter() - start
        start = time.perf_counter()
        slow = loop_baseline(s_id, s_ood, args.loop_resamples, seed=0)
        t_loop = (time.perf_counter() - start) * args.resamples / args.loop_resamples
        for key in slow:  # same resamples, same values
            np.testing.assert_allclose(fast[key][: args.loop_resamples], slow[key], rtol=1e-12, atol=1e-9)
        rows.append(f"| {n_id:,} x {n_ood:,} | {t_loop:.1f} | {t_fast:.2f} | **{t_loop / t_fast:.0f}x** |")
    section = "\n".join([
        "## Bootstrap confidence intervals (`bootstrap_ci.py`)", "",
        "Baseline: a plain loop that indexes each resample and calls `ood_metrics` (scikit-learn curves); peekflow: "
        "`bootstrap_metrics`. Same seeded resamples, values checked equal.", "",
        f"| ID x OOD scores | plain loop, s per {args.resamples} resamples | peekflow, s | speed-up |",
        "|---|---:|---:|---:|", *rows, "",
        f"Setup: the loop timed on {args.loop_resamples} resamples and scaled; numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs.", "",
        command_line(),
    ])
    print(section)
    if args.write_readme:
        write_section("bootstrap_ci", section)


if __name__ == "__main__":
    main()
