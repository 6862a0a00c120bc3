"""Every post-hoc OOD method of peekflow against pytorch-ood's fit/predict on the same synthetic arrays: seconds and
peak memory. Not a test.

Data (seeded, float32): a training bank of N x D non-negative "pooled" features in K classes and Q queries, a
linear head W [K,D], b [K] and its logits. peekflow: `fit` on the bank's FeatureSet, `score` on the queries'.
pytorch-ood 0.4.0: its detector's `fit_features` / `predict_features` (or `predict_feature_maps`, `predict_logits`,
`score`) on torch tensors sharing the same memory; methods it lacks run peekflow only. Each measurement is a fresh
subprocess (`--repeats` per implementation, alternating, medians reported); memory is its peak resident memory
(ru_maxrss) above the memory it held once the arrays existed, in units of the bank's size (N x D x 4 bytes; 1.00 =
one more bank). Scores are compared per sample, after peekflow's documented
convention transform (docs/ood_methods.md), as the maximum difference relative to the largest |score|.
Run: python benchmarks/ood_methods.py --help
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from readme_section import command_line, write_section

# peekflow method -> (pytorch-ood call, factor) with peekflow's score = factor * pytorch-ood's; None: no counterpart
REFERENCE = {
    "maxlogit": ("pood.MaxLogit.score(z)", -1), "entropy": ("pood.Entropy.score(z)", -1),
    "gen": ("pood.GEN.score(z, gamma=0.1, M=100)", "-min(100, K)"),
    "klmatching": ("pood.KLMatching(None).fit_logits(zt, y).predict_logits(z)", -1),
    "react": ("pood.ReAct(None, head, percentile=0.9).fit_feature_maps(xt, y).predict_feature_maps(x)", -1),
    "ash_p": ("pood.ASH(None, flat, variant='ash-p', percentile=0.9).predict_feature_maps(x[:, :, None, None])", -1),
    "ash_b": ("pood.ASH(None, flat, variant='ash-b', percentile=0.9).predict_feature_maps(x[:, :, None, None])", -1),
    "ash_s": ("pood.ASH(None, flat, variant='ash-s', percentile=0.9).predict_feature_maps(x[:, :, None, None])", -1),
    "scale": ("pood.SCALE(None, flat, percentile=0.85).predict_feature_maps(x[:, :, None, None])", -1),
    "dice": ("pood.DICE(None, w, b, p=0.7).fit_features(xt, y).predict_features(x)", -1),
    "gradnorm": ("pood.GradNorm(head, param_filter=lambda n: n == 'weight').predict(x)", "-K"),
    "vim": ("pood.ViM(None, D // 2, w, b).fit_features(xt, y).predict_features(x)", -1),
    "residual": None,
    "mahalanobis": ("pood.Mahalanobis(None).fit_features(xt, y).predict_features(x)", "-2 * N"),  # -0.5 md, summed cov
    "rmds": ("pood.RMD(None).fit_features(xt, y).predict_features(x)", "-N"),
    "she": ("pood.SHE(None, head).fit_features(xt, y).predict_features(x)", -1),
    "nnguide": ("pood.NNGuide(None, head, k=10).fit_features(xt, y).predict_features(x)", -1),
    "fdbd": ("pood.fDBD(None, head).fit_features(xt).predict_features(x)", -1),
    "nci": ("pood.NCI(None, head).fit_features(xt).predict_features(x)", -1),
    "gmm": ("pood.GMM(None).fit_features(xt, y).predict_features(x)", -1),
}


NOTE = (
    "Large differences are pytorch-ood's float32 and clipping, not disagreement: Entropy and GEN clip probabilities to "
    "[1e-7, 1 - 1e-7] (GEN's gamma = 0.1 magnifies that), KL-Matching's float32 templates underflow to 0 and their log "
    "to float32's minimum, ViM's float32 eigen-decomposition splits the synthetic features' many near-equal "
    "eigenvalues elsewhere; tests/test_ood_posthoc.py checks every method to 1e-4 where those do not bite. Memory "
    "beyond the bank is mostly fixed-size work arrays (1024-row chunks), so its ratio to the bank falls as N "
    "grows; GMM's is mostly its model, K packed Cholesky factors (K x D(D+1)/2 float64: 0.25 bank at N = 100,000, "
    "D = 512, K = 50; 1.6 banks at ImageNet's K = 1000, D = 2048, N = 1.28M). "
    "Time: every fitted peekflow method also checks that no scored image is in its fit bank (paths resolved as "
    "realpath does, then a set lookup), which pytorch-ood does not do; the 'of which leak check' column times that "
    "check alone on fresh path strings, and the last speed-up leaves it out. Times of a few ms are near the clock's "
    "resolution. Goal of issue 16: memory at most 1.5 x the bank, time at most pytorch-ood's."
)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def data(n: int, q: int, d: int, k: int):
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.gamma(2.0, 1.0, (k, d)).astype(np.float32)
    w = ((centres - centres.mean(0)) / 2 + rng.normal(0, 0.1, (k, d))).astype(np.float32)
    b = rng.normal(0, 0.3, k).astype(np.float32)
    y = rng.integers(0, k, n)
    xt = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 8192):
        noise = rng.standard_normal((len(y[s:s + 8192]), d), dtype=np.float32)
        xt[s:s + 8192] = np.abs(centres[y[s:s + 8192]] + 0.7 * noise)
    x = np.abs(rng.standard_normal((q, d), dtype=np.float32)) * 2  # an OOD half, an ID-like half
    x[: q // 2] = np.abs(centres[rng.integers(0, k, q // 2)] + 0.7 * rng.standard_normal((q // 2, d), np.float32))
    return xt, y, x, w, b


def child(impl: str, method: str, n: int, q: int, d: int, k: int, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from peekflow.features.last_layer import LastLayer
    from peekflow.features.store import FeatureSet
    from peekflow.ood.base import build

    xt, y, x, w, b = data(n, q, d, k)
    layer = LastLayer(w, b, "fc", "penultimate")
    zt, z = (xt @ w.T + b).astype(np.float32), (x @ w.T + b).astype(np.float32)
    if impl == "pytorch-ood":
        import pytorch_ood.detector as pood  # noqa: F401  (used by the REFERENCE expressions)

        head = torch.nn.Linear(d, k)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(w))
            head.bias.copy_(torch.from_numpy(b))
        flat = lambda m: head(m.flatten(1))  # noqa: E731
        env = dict(pood=pood, head=head, flat=flat, D=d, w=torch.from_numpy(w), b=torch.from_numpy(b),
                   xt=torch.from_numpy(xt), y=torch.from_numpy(y), x=torch.from_numpy(x), zt=torch.from_numpy(zt),
                   z=torch.from_numpy(z))
    train = FeatureSet("bank", zt, xt, y, [f"/bank/{i}" for i in range(n)], last_layer=layer)
    query = FeatureSet("queries", z, x, np.full(q, -1), [f"/q/{i}" for i in range(q)], last_layer=layer)
    detector = build(method, {})  # imports every detector module: before the clock starts
    before = rss_mib()
    start, cpu = time.perf_counter(), time.process_time()
    if impl == "peekflow":
        if detector.needs_fit:
            detector.fit(train)
        scores = detector.score(query)
    else:
        with torch.no_grad() if method != "gradnorm" else torch.enable_grad():
            scores = eval(REFERENCE[method][0], env).detach().double().numpy()  # noqa: S307 (fixed expressions)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    check_seconds = 0.0
    if impl == "peekflow" and detector.needs_fit:  # the leak check alone, on fresh path strings (no cached hashes)
        from peekflow.ood.base import check_disjoint, resolved_paths

        bank, scored = [f"/bank/{i}" for i in range(n)], [f"/q/{i}" for i in range(q)]
        cpu = time.process_time()
        check_disjoint(method, resolved_paths(bank), "bank", FeatureSet("q", z, x, query.labels, scored))
        check_seconds = time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "check_seconds": check_seconds,
            "peak_over_mib": max(peak - before, 0.0),
            "bank_mib": xt.nbytes / 2**20,
            "scores": np.asarray(scores, dtype=np.float64).tolist()}


def measure_once(impl: str, method: str, args) -> dict | None:
    cmd = [sys.executable, __file__, "--child", impl, method, "--train", str(args.train), "--queries",
           str(args.queries), "--dim", str(args.dim), "--classes", str(args.classes), "--threads", str(args.threads)]
    threads = str(args.threads)  # BLAS and OpenMP pools of numpy and torch alike, fixed before they start
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        print(f"{impl} {method} failed:\n{out.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(method: str, args, index: int = 0) -> tuple[dict | None, dict | None]:
    """(peekflow's, pytorch-ood's or None) measurements of `method`: `args.repeats` fresh subprocesses each,
    the two implementations alternating (which starts alternates with the repeat and the method's `index`); medians."""
    import numpy as np

    impls = ["peekflow"] + (["pytorch-ood"] if REFERENCE[method] else [])
    runs: dict[str, list[dict]] = {impl: [] for impl in impls}
    for r in range(args.repeats):
        for impl in impls if (r + index) % 2 == 0 else impls[::-1]:
            runs[impl].append(measure_once(impl, method, args))
    out = {}
    for impl, results in runs.items():
        if all(results):  # a failed run (reported on stderr) leaves the implementation's cells empty
            out[impl] = dict(results[0], **{key: float(np.median([r[key] for r in results]))
                                            for key in ("seconds", "cpu_seconds", "check_seconds",
                                                        "peak_over_mib")})
    return out.get("peekflow"), out.get("pytorch-ood")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=50_000, help="bank rows N")
    p.add_argument("--queries", type=int, default=5_000, help="query rows Q")
    p.add_argument("--dim", type=int, default=512, help="feature dimension D")
    p.add_argument("--classes", type=int, default=50, help="classes K")
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS / OpenMP threads of both implementations")
    p.add_argument("--repeats", type=int, default=3, help="subprocesses per method and implementation (medians)")
    p.add_argument("--methods", nargs="+", default=list(REFERENCE), choices=list(REFERENCE))
    p.add_argument("--write-readme", action="store_true", help="replace this benchmark's section in README.md")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.train, args.queries, args.dim, args.classes, args.threads)))
        return
    import numpy as np

    lines = [
        "## OOD methods against pytorch-ood (`ood_methods.py`)",
        "",
        f"Bank N x D = {args.train:,} x {args.dim} (K = {args.classes} classes), Q = {args.queries:,} queries, "
        f"{args.threads} thread(s), CPU ({platform.machine()}, {os.cpu_count()} CPUs). Time: fit + score, as CPU "
        "time of the process (with one thread, the work done, barely moved by other jobs on the cores; the speed-up "
        "is its ratio) and as wall time (what a user waits; inflated when other jobs share the cores), median of "
        f"{args.repeats} subprocess(es) per implementation, which runs first alternating; memory: peak resident "
        "memory above the arrays', in units of the bank's size; difference: max |peekflow - factor x pytorch-ood| / "
        "max |score|.",
        "",
        "| method | peekflow CPU s | of which leak check | pytorch-ood CPU s | speed-up | speed-up without the check "
        "| peekflow wall s | pytorch-ood wall s | peekflow mem / bank | pytorch-ood mem / bank | difference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    n, k = args.train, args.classes
    load_start = os.getloadavg()[0]
    for index, method in enumerate(args.methods):
        ours, ref = measure(method, args, index)
        if ours is None:
            lines.append(f"| {method} | failed | | | | | | | | | |")
            continue
        cpu, check = ours["cpu_seconds"], ours["check_seconds"]
        cells = [f"{cpu:.3f}", f"{check:.3f}" if check else "-", "-", "-", "-", f"{ours['seconds']:.2f}", "-",
                 f"{ours['peak_over_mib'] / ours['bank_mib']:.2f}", "-", "-"]
        if ref is not None:
            factor = REFERENCE[method][1]
            factor = eval(factor, {"K": k, "N": n, "min": min}) if isinstance(factor, str) else factor  # noqa: S307
            a, r = np.array(ours["scores"]), factor * np.array(ref["scores"])
            theirs = ref["cpu_seconds"]
            cells[2:5] = [f"{theirs:.3f}", f"{theirs / max(cpu, 1e-3):.2f}x",
                          f"{theirs / max(cpu - check, 1e-3):.2f}x" if check else "-"]
            cells[6] = f"{ref['seconds']:.2f}"
            cells[8:] = [f"{ref['peak_over_mib'] / ref['bank_mib']:.2f}",
                         f"{np.abs(a - r).max() / np.abs(r).max():.1e}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    import pytorch_ood
    import torch

    lines += ["", NOTE, "", f"Load average (1 min) {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
              f"(other jobs shared the {os.cpu_count()} cores: wall times carry their noise).", "",
              f"pytorch-ood {pytorch_ood.__version__}, torch {torch.__version__}, numpy {np.__version__}.",
              "", command_line()]
    section = "\n".join(lines)
    print("\n" + section)
    if args.write_readme:
        write_section("ood_methods", section)


if __name__ == "__main__":
    main()
