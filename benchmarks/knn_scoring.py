"""KNN scoring throughput (queries/s) and peak memory: peekflow's faiss and torch backends against a faiss index.

Bank: N random unit vectors of D dims (float32, seeded); queries: Q other random unit vectors; each query's distance
to its k-th neighbour, as the KNN detector computes it (`NeighbourSearch.kth_distance`, chunks of 4096 queries).
Baseline: faiss IndexFlatL2 with the bank added to it (the earlier peekflow KNN; the index holds a second copy of the
bank). Every run is a fresh subprocess, so its peak resident memory (ru_maxrss) is its own; memory is reported as
peak RSS above the process's RSS before the bank existed, in units of the bank's size (1.0 = the bank alone).
Run: python benchmarks/knn_scoring.py --help
"""

from __future__ import annotations

import argparse, datetime, json, os, platform, resource, shlex, subprocess, sys, time
from pathlib import Path
from readme_section import write_section

README = Path(__file__).with_name("README.md")
RUNS = {
    "faiss-index": "faiss IndexFlatL2 + add (baseline)",
    "faiss": "peekflow `backend: faiss` (faiss.knn on the bank in place)",
    "torch": "peekflow `backend: torch` (matmul + top-k in chunks)",
}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def random_unit(n: int, d: int, seed: int):
    """n x d float32 unit rows, generated and normalised in chunks (no float64 or second copy of the array)."""
    import numpy as np

    from peekflow.ood.neighbours import normalise_rows_

    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 8192):
        x[start : start + 8192] = rng.standard_normal((min(8192, n - start), d), dtype=np.float32)
    return normalise_rows_(x)


def child(run: str, n: int, d: int, queries: int, k: int, threads: int) -> dict:
    """One measurement in this (fresh) process."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    import faiss

    faiss.omp_set_num_threads(threads)
    from peekflow.ood.neighbours import NeighbourSearch

    q = random_unit(queries, d, seed=1)
    before = rss_mib()
    bank = random_unit(n, d, seed=0)
    if run == "faiss-index":
        index = faiss.IndexFlatL2(d)
        index.add(bank)

        def kth(x):
            out = np.empty(len(x))
            for s in range(0, len(x), 4096):
                out[s : s + 4096] = np.sqrt(index.search(x[s : s + 4096], k)[0][:, -1])
            return out
    else:
        search = NeighbourSearch(bank, run, batch_size=4096)

        def kth(x):
            return search.kth_distance(x, k)

    kth(q[:50])  # warm-up
    start = time.perf_counter()
    result = kth(q)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": seconds, "qps": queries / seconds, "bank_mib": bank.nbytes / 2**20,
            "peak_over_mib": peak - before, "checksum": float(result.sum())}


def measure(run: str, n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", run, "--n-child", str(n), "--dim", str(args.dim),
           "--queries", str(args.queries), "--k", str(args.k), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])




def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--banks", type=int, nargs="+", default=[100_000, 1_000_000], help="bank sizes N")
    p.add_argument("--dim", type=int, default=512, help="vector dimension D")
    p.add_argument("--queries", type=int, default=2000, help="queries Q")
    p.add_argument("--k", type=int, default=50, help="neighbour rank k")
    p.add_argument("--threads", type=int, default=1, help="torch and faiss CPU threads")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--write-readme", action="store_true", help=f"replace this benchmark's section in {README.name}")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--n-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n_child, args.dim, args.queries, args.k, args.threads)))
        return

    import faiss
    import torch

    rows = []
    for n in args.banks:
        results = {run: measure(run, n, args) for run in args.runs}
        base = results.get("faiss-index")
        for run, r in results.items():
            same = base is None or abs(r["checksum"] - base["checksum"]) < 1e-3 * args.queries
            rows.append((n, run, r, same, base))
            print(f"N={n} {run}: {r['qps']:.0f} queries/s, peak +{r['peak_over_mib']:.0f} MiB "
                  f"({r['peak_over_mib'] / r['bank_mib']:.2f} x bank), same scores as baseline: {same}", flush=True)

    lines = [
        "## KNN scoring (`knn_scoring.py`)",
        "",
        f"Baseline: {RUNS['faiss-index']} -- the index holds a second copy of the bank. Query throughput of the "
        f"k-th-neighbour distance (k={args.k}, Q={args.queries} queries in chunks of 4096) and peak resident memory "
        "above the process's memory before the bank existed, in units of the bank's own size (1.00 = the bank alone).",
        "",
        "| bank N x D | run | queries/s | vs. baseline | peak memory / bank |",
        "|---|---|---:|---:|---:|",
    ]
    for n, run, r, same, base in rows:
        ratio = f"{r['qps'] / base['qps']:.2f}x" if base else "-"
        lines.append(f"| {n:,} x {args.dim} | {RUNS[run]} | {r['qps']:,.0f} | {ratio} | "
                     f"{r['peak_over_mib'] / r['bank_mib']:.2f} ({r['bank_mib']:,.0f} MiB bank) |")
    mismatched = [f"{n}/{run}" for n, run, _r, same, _b in rows if not same]
    lines += [
        "",
        "All runs give the same scores (checksums of the k-th distances agree)." if not mismatched
        else f"**Score mismatch**: {mismatched}",
        "",
        f"Setup: device CPU ({platform.machine()}, {os.cpu_count()} CPUs; no GPU on the measuring machine, so the "
        f"faiss GPU index and torch CUDA paths are not measured here), {args.threads} torch/faiss thread(s), "
        f"faiss {faiss.__version__}, torch {torch.__version__}.",
        "",
        f"Command: `{shlex.join(['python', os.path.relpath(sys.argv[0], README.parent.parent), *sys.argv[1:]])}` -- "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
    ]
    section = "\n".join(lines)
    print("\n" + section)
    if args.write_readme:
        write_section("knn_scoring", section)


if __name__ == "__main__":
    main()
