"""Peak memory of `peekflow topn` when the number of images grows 10x, against a brute-force load-all + argsort.

Makes synthetic feature stores (random maxact/<layer>, --small and --large images x --channels) in a temporary folder,
then runs, each in its own subprocess: `peekflow topn` (streams the store in blocks) and the baseline (reads the
whole [images, channels] matrix, `np.argsort(-maxact, axis=0, kind="stable")[:N]`). Peak resident memory (max RSS)
of each subprocess comes from os.wait4. The two results are checked to be equal.
Run: python benchmarks/topn_memory.py --help
"""

from __future__ import annotations

import argparse, datetime, os, platform, shlex, shutil, subprocess, sys, tempfile
from pathlib import Path

import h5py
import numpy as np

from peekflow.features.store import StoreWriter
from readme_section import write_section

README = Path(__file__).with_name("README.md")
SECTION = "topn_memory"

BASELINE = """
import sys, h5py, numpy as np
store, layer, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with h5py.File(store) as h5:
    maxact = h5["maxact/" + layer][:]
np.save(out, np.argsort(-maxact, axis=0, kind="stable")[:n].T)
"""




def make_store(path: Path, rows: int, channels: int, layer: str, seed: int = 0, block: int = 10000) -> None:
    """A feature store whose maxact/<layer> is random (written block by block, so this process stays small too)."""
    rng = np.random.default_rng(seed)
    writer = StoreWriter(path, rows, 2, {layer: channels}, {"model": "bench", "dataset": f"synthetic{rows}"})
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        writer.h5[f"maxact/{layer}"][start:stop] = rng.gamma(2.0, 1.0, (stop - start, channels)).astype(np.float32)
        writer.h5["paths"][start:stop] = [f"img{i:07d}.png" for i in range(start, stop)]
    writer.finish()


def peak_rss_mb(cmd: list[str]) -> float:
    """Run cmd; its peak resident memory in MiB (ru_maxrss is KiB on Linux)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{cmd[0]} failed:\n{err}")
    return usage.ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=20_000, help="images in the small store")
    p.add_argument("--large", type=int, default=200_000, help="images in the large store")
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--n", type=int, default=50, help="top-N per channel")
    p.add_argument("--block-rows", type=int, default=4096, help="peekflow topn --block-rows")
    p.add_argument("--write-readme", action="store_true", help=f"replace this benchmark's section in {README.name}")
    args = p.parse_args()

    cli = shutil.which("peekflow", path=str(Path(sys.executable).parent))
    topn_cmd = [cli, "topn"] if cli else [sys.executable, "-m", "peekflow.cli.topn"]
    layer, results = "layer", {}
    with tempfile.TemporaryDirectory(prefix="peekflow-bench-") as tmp:
        tmp = Path(tmp)
        for rows in (args.small, args.large):
            store = tmp / f"store{rows}.h5"
            make_store(store, rows, args.channels, layer)
            out, base_out = tmp / f"topn{rows}.h5", tmp / f"base{rows}.npy"
            topn_mb = peak_rss_mb([*topn_cmd, "--store", str(store), "--layer", layer, "--n", str(args.n),
                                   "--block-rows", str(args.block_rows), "--out", str(out)])
            base_mb = peak_rss_mb([sys.executable, "-c", BASELINE, str(store), layer, str(args.n), str(base_out)])
            with h5py.File(out) as h5:
                if not np.array_equal(h5["indices"][:], np.load(base_out)):
                    sys.exit(f"peekflow topn and brute force disagree on {rows} images")
            results[rows] = (topn_mb, base_mb)
            store.unlink()
            print(f"{rows} images: peekflow topn {topn_mb:.0f} MiB, brute force {base_mb:.0f} MiB", flush=True)

    (t_small, b_small), (t_large, b_large) = results[args.small], results[args.large]
    matrix = lambda rows: rows * args.channels * 4 / 2**20  # noqa: E731
    section = "\n".join([
        "## Top-N memory (`topn_memory.py`)", "",
        "Peak resident memory (max RSS of the subprocess) of `peekflow topn` against the baseline, a brute-force "
        "script that loads the whole `maxact/<layer>` matrix and argsorts it; both give identical indices (checked).",
        "", "| images | maxact matrix MiB | `peekflow topn` MiB | brute force MiB |", "|---:|---:|---:|---:|",
        f"| {args.small:,} | {matrix(args.small):.0f} | {t_small:.0f} | {b_small:.0f} |",
        f"| {args.large:,} | {matrix(args.large):.0f} | {t_large:.0f} | {b_large:.0f} |", "",
        f"**{args.large // args.small}x the images: `peekflow topn` peak memory x{t_large / t_small:.2f}, "
        f"brute force x{b_large / b_small:.2f}.**", "",
        f"Setup: synthetic stores, {args.channels} channels, N={args.n}, --block-rows {args.block_rows}, "
        f"{platform.machine()}, numpy {np.__version__}, h5py {h5py.__version__}.", "",
        f"Command: `{shlex.join(['python', 'benchmarks/topn_memory.py', *sys.argv[1:]])}`"
        f" — {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
    ])
    print(section)
    if args.write_readme:
        write_section(SECTION, section)


if __name__ == "__main__":
    main()
