"""The embedded default's stages through Snakemake with `device: cuda`, compared with a CPU run of the same config.

1. reference (here, on the CPU):  python benchmarks/gpu_workflow.py reference --run <a finished CPU run of rule all>
       --out .gpu/reference.tar.gz
   packs what the GPU run starts from and is compared with: the CPU-trained checkpoints (and their metrics), the
   config, every feature store, the OOD table, the prototypes' quality reports, probing, VITAL's files, and the hash
   of every generated data set's attributes.csv (~25 MB for the embedded default).
2. run (on the device machine):   python benchmarks/gpu_workflow.py run --reference .gpu/reference.tar.gz
       --work /tmp/gpu_run --json $OUT/gpu_workflow.json [--cores 16]
   regenerates the data sets (deterministic; their attributes.csv must hash as in the reference), puts the
   reference's checkpoints where rule train_model writes them, newer than their inputs, and runs rule all with
   `--config device=cuda --rerun-triggers mtime`: no model is retrained, every other stage runs on the GPU. Each
   rule's wall time comes from its benchmark files (the per-rule rates the cost model needs).
3. compare (both):                python benchmarks/gpu_workflow.py compare --reference <dir or tar> --run <dir>
   the checks below, each with its tolerance, PASS / FAIL; exit status 1 if any fails.
Checks (TOL): every feature store's logits and features/<layer>, max |gpu - cpu| / max |cpu| (fp32; amp stores get
the amp tolerance); the OOD table's AUROC per (method, data set) within 0.5 points; each prototype method's target
accuracy, and probing's accuracy and Hungarian accuracy, at most 0.15 / 0.2 below the CPU run's (one of the default's
10 units is 0.1); VITAL's files complete with finite measurements, the mean VITAL probe similarity within 0.1 of the
CPU's; each atlas of the CPU run written. The GPU run's own renders (prototypes, VITAL) differ from the CPU's
image by image (other random streams and kernels); what is compared is what a user reads off them.
A check that cannot be made (a file absent from either side) fails, naming the file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

# store: max |gpu - cpu| / max |cpu|; AUROC: points; the rest: how far below the CPU run's figure the GPU run's may be
TOL = {"store fp32": 1e-3, "store amp": 1e-1, "auroc points": 0.5, "target accuracy": 0.15, "probing accuracy": 0.2,
       "vital similarity": 0.1}
PACKED = ["results/models/*/model.pt", "results/models/*/metrics.json", "results/features/*/*.h5",
          "results/ood_table.csv", "results/prototypes/*/*_quality.json", "results/probing/*/*/probing.json",
          "results/neurons/*/*/vital.h5", "results/atlas/*/index.html"]


def attribute_hashes(run: Path) -> dict[str, str]:
    """sha256 of every generated data set's attributes.csv (it lists every image and its generated attributes)."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.glob("resources/datasets/*/attributes.csv"))}


def reference(run: Path, out: Path, config: Path) -> list[str]:
    """Pack the reference of a finished CPU run (module doc, step 1); returns the packed paths."""
    files = sorted({p for pattern in PACKED for p in run.glob(pattern)})
    if not (run / "results/ood_table.csv").exists():
        raise SystemExit(f"{run}: no results/ood_table.csv -- run rule all there first")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for path in files:
            tar.add(path, arcname=str(path.relative_to(run)))
        tar.add(config, arcname="config.yaml")
        meta = json.dumps({"attributes": attribute_hashes(run)}, indent=1).encode()
        info = tarfile.TarInfo("reference.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return [str(p.relative_to(run)) for p in files]


def unpacked(ref: Path, into: Path) -> Path:
    """A reference folder: `ref` itself, or the tarball unpacked into `into`."""
    if ref.is_dir():
        return ref
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ref) as tar:
        tar.extractall(into, filter="data")
    return into


def snakemake(work: Path, *args: str, cores: int) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe if exe.exists() else "snakemake"), "-s", str(Path(__file__).resolve().parents[1] / "Snakefile"),
           "--directory", str(work), "--configfile", str(work / "config.yaml"), "--cores", str(cores), *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def prepare(ref: Path, work: Path, cores: int) -> None:
    """Data sets regenerated (checked against the reference's hashes) and the reference's checkpoints in place, newer
    than everything they depend on, so that rule all retrains nothing."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(ref / "config.yaml", work / "config.yaml")
    wanted = json.loads((ref / "reference.json").read_text())["attributes"]
    if wanted:
        done = snakemake(work, *wanted, cores=cores)
        if done.returncode:
            raise SystemExit(f"data generation failed:\n{done.stderr[-3000:]}")
        got = attribute_hashes(work)
        differ = sorted(k for k in wanted if got.get(k) != wanted[k])
        if differ:
            raise SystemExit(f"regenerated data differ from the reference's: {differ}")
    for source in sorted(ref.glob("results/models/*/*")):
        target = work / source.relative_to(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        os.utime(target)  # newer than the regenerated data: rule train_model has nothing to do


def run(ref: Path, work: Path, device: str, cores: int, extra: list[str]) -> dict:
    """Step 2: rule all on `device`; (seconds, per-rule wall seconds from the benchmark files, the run's jobs)."""
    prepare(ref, work, cores)
    start = time.perf_counter()
    done = snakemake(work, "--config", f"device={device}", "--rerun-triggers", "mtime", *extra, cores=cores)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"rule all on {device} failed after {seconds:.0f} s:\n{done.stderr[-4000:]}")
    rules: dict[str, float] = {}
    for tsv in (work / "results/benchmarks").rglob("*.tsv"):
        rule = tsv.relative_to(work / "results/benchmarks").parts[0].removesuffix(".tsv")
        rules[rule] = rules.get(rule, 0.0) + float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])
    return {"device": device, "seconds": seconds, "rule_seconds": rules, "trained": "train_model" in rules}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(float(np.abs(b).max()), 1e-12))


class Checks(list):
    def add(self, name: str, value: float, op: str, bound: float, detail: str = "") -> None:
        ok = bool(value <= bound if op == "<=" else value >= bound) and np.isfinite(value)
        self.append({"name": name, "value": float(value), "op": op, "bound": bound, "passed": ok, "detail": detail})

    def missing(self, name: str, path: Path) -> None:
        self.append({"name": name, "value": float("nan"), "op": "exists", "bound": 0, "passed": False,
                     "detail": f"{path} is missing"})


def pairs(ref: Path, gpu: Path, pattern: str, checks, what):
    """(reference file, the run's file) of each reference file matching `pattern`; a file the run lacks is recorded
    as missing (`what(path)` names it)."""
    for path in sorted(ref.glob(pattern)):
        mine = gpu / path.relative_to(ref)
        if mine.exists():
            yield path, mine
        else:
            checks.missing(what(path), mine)


def compare(ref: Path, gpu: Path) -> Checks:
    """Step 3: the checks of the module doc, reference (CPU) against a run."""
    checks = Checks()
    for path, mine in pairs(ref, gpu, "results/features/*/*.h5", checks,
                            lambda path: f"store {path.relative_to(ref)}"):
        with h5py.File(path) as a, h5py.File(mine) as b:
            tol = TOL["store amp"] if json.loads(b.attrs.get("settings", "{}")).get("amp") else TOL["store fp32"]
            keys = ["logits", *(f"features/{layer}" for layer in a.get("features", {}))]
            for key in keys:
                checks.add(f"store {path.relative_to(ref)} {key} (rel)", rel(b[key][:], a[key][:]), "<=", tol)
    tables = [p / "results/ood_table.csv" for p in (ref, gpu)]
    if all(p.exists() for p in tables):
        a, b = (pd.read_csv(p).set_index(["model", "method", "ood_dataset"]).auroc for p in tables)
        worst = (b - a).abs().reindex(a.index)
        row = worst.fillna(np.inf).idxmax()
        checks.add("OOD table AUROC, worst row (points)", float(worst.fillna(np.inf).max()), "<=",
                   TOL["auroc points"], detail="/".join(map(str, row)))
    else:
        checks.missing("OOD table", next(p for p in tables if not p.exists()))
    for path, mine in pairs(ref, gpu, "results/prototypes/*/*_quality.json", checks,
                            lambda path: f"prototypes {path.name}"):
        cpu = json.loads(path.read_text())["target_accuracy"]
        checks.add(f"{path.relative_to(ref / 'results')} target accuracy", json.loads(mine.read_text())
                   ["target_accuracy"], ">=", cpu - TOL["target accuracy"], detail=f"CPU {cpu:.3g}")
    for path, mine in pairs(ref, gpu, "results/probing/*/*/probing.json", checks,
                            lambda path: f"probing {path.relative_to(ref)}"):
        cpu, got = json.loads(path.read_text()), json.loads(mine.read_text())
        for key in ("accuracy", "hungarian_accuracy"):
            checks.add(f"{path.relative_to(ref / 'results')} {key}", got[key], ">=",
                       cpu[key] - TOL["probing accuracy"], detail=f"CPU {cpu[key]:.3g}")
    for path, mine in pairs(ref, gpu, "results/neurons/*/*/vital.h5", checks,
                            lambda path: f"VITAL {path.relative_to(ref)}"):
        with h5py.File(path) as a, h5py.File(mine) as b:
            finite = all(np.isfinite(b[k][:]).all() for k in ("activation/plain", "activation/vital"))
            checks.add(f"VITAL {path.relative_to(ref)} complete, finite", float(bool(b.attrs.get("complete"))
                                                                                 and finite), ">=", 1)
            if "similarity/vital" in a and "similarity/vital" in b:
                diff = abs(float(np.mean(b["similarity/vital"][:])) - float(np.mean(a["similarity/vital"][:])))
                checks.add(f"VITAL {path.relative_to(ref)} mean probe similarity vs CPU", diff, "<=",
                           TOL["vital similarity"])
    for path in sorted(ref.glob("results/atlas/*/index.html")):
        mine = gpu / path.relative_to(ref)
        checks.add(f"atlas {path.relative_to(ref / 'results')} written", float(mine.exists()), ">=", 1)
    return checks


def report(checks: Checks) -> int:
    for c in checks:
        print(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['name']} = {c['value']:.4g} ({c['op']} {c['bound']:g})"
              + (f" {c['detail']}" if c["detail"] else ""))
    failed = [c for c in checks if not c["passed"]]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--run", type=Path, required=True)
    r.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    r.add_argument("--out", type=Path, required=True)
    g = sub.add_parser("run")
    g.add_argument("--reference", type=Path, required=True)
    g.add_argument("--work", type=Path, required=True)
    g.add_argument("--device", default="cuda")
    g.add_argument("--cores", type=int, default=os.cpu_count())
    g.add_argument("--json", type=Path)
    g.add_argument("--dry-run", action="store_true", help="plan rule all on the device, run nothing (tests)")
    c = sub.add_parser("compare")
    c.add_argument("--reference", type=Path, required=True)
    c.add_argument("--run", type=Path, required=True)
    args = p.parse_args(argv)
    if args.step == "reference":
        packed = reference(args.run, args.out, args.config)
        print(f"wrote {args.out}: {len(packed)} files, {args.out.stat().st_size / 1e6:.1f} MB")
        return 0
    ref = unpacked(args.reference, (args.work if args.step == "run" else args.run) / "_reference")
    if args.step == "compare":
        return report(compare(ref, args.run))
    figures = run(ref, args.work, args.device, args.cores, ["-n"] if args.dry_run else [])
    if args.dry_run:
        return 0
    checks = compare(ref, args.work)
    status = report(checks)
    if args.json:
        args.json.write_text(json.dumps({**figures, "checks": checks}, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
