"""Finished batches a kill at a random instant loses: jobs SIGKILLed at seeded random moments of their work, then rerun.

Each trial starts a job afresh (its partial folder deleted), SIGKILLs it at a moment drawn uniformly over the
uninterrupted job's work (from its start to its exit: creating the partial folder, rendering or extracting a batch,
writing a batch file, writing the output), then reruns it. A batch counts as finished once the killed job has
it as a whole file in its partial folder, which `peekflow.shards.Batches` does by renaming a complete file into place;
for the rendering stages the job also logs each finished batch ("batch j/B made"), which is counted too. Lost = the
finished batches minus those the rerun resumes from ("resumed from N batches"). Every rerun also runs to its end and
its output is compared with the uninterrupted job's, bit for bit.

Baseline: the uninterrupted job (its wall time sets the kill window; its output is what each rerun must equal).
The jobs are `peekflow <stage>` processes forked from a server that imported torch once (multiprocessing's
forkserver), so the kill window is the job's own work rather than the interpreter's start-up, in which nothing is
written. Run: python benchmarks/resume_kill.py --help
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # readme_section, when run from elsewhere

FORKS = multiprocessing.get_context("forkserver")
MODEL = {"name": "bench", "arch": "small_resnet", "num_classes": 3, "arch_kwargs": {"widths": [8, 8, 16, 16]},
         "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}


def setup(work: Path, images: int) -> None:
    """A random small_resnet checkpoint and `images` random 32 px images in 3 class folders."""
    import torch
    from PIL import Image

    from peekflow.models.checkpoint import save_checkpoint
    from peekflow.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("small_resnet", 3, widths=[8, 8, 16, 16])
    save_checkpoint(work / "model.pt", model.eval(), "small_resnet", ["a", "b", "c"], {"widths": [8, 8, 16, 16]})
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = work / "images" / "abc"[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def stage_args(stage: str, work: Path, out: Path) -> list[str]:
    common = ["--checkpoint", str(work / "model.pt"), "--model", json.dumps(MODEL), "--device", "cpu", "--threads",
              "1", "--out", str(out)]
    if stage == "extract":
        settings = {"layers": ["layer3", "layer4"], "batch_size": 16}
        return ["extract", *common, "--images", str(work / "images"), "--dataset-name", "bench", "--settings",
                json.dumps(settings)]
    settings = {"size": 32, "per_class": 8, "steps": 30, "batch_size": 2}  # 24 prototypes in 12 batches
    return ["deepinversion", *common, "--settings", json.dumps(settings)]


def _job(argv: list[str], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from peekflow.cli import main

    sys.exit(main(argv))


def _nothing() -> None:
    pass


def run(argv: list[str], log: Path, kill_after: float | None = None) -> tuple[int, float]:
    """(exit code, seconds) of `peekflow <argv>`, SIGKILLed `kill_after` seconds after its start."""
    start = time.perf_counter()
    job = FORKS.Process(target=_job, args=(argv, str(log)))
    job.start()
    if kill_after is not None:
        job.join(kill_after)
        job.kill()
    job.join()
    return job.exitcode, time.perf_counter() - start


def same_output(a: Path, b: Path) -> bool:
    """Every data set and attribute of two HDF5 outputs equal."""
    import h5py

    def contents(path):
        with h5py.File(path) as h5:
            found = {}
            h5.visititems(lambda name, obj: found.__setitem__(name, obj.asstr()[:].tolist() if obj.dtype.kind == "O"
                                                              else obj[:].tobytes())
                          if isinstance(obj, h5py.Dataset) else None)
            return found, {k: np.asarray(v).tobytes() for k, v in h5.attrs.items()}

    return contents(a) == contents(b)


def trials(stage: str, work: Path, count: int, rng: np.random.Generator) -> dict:
    from peekflow.shards import partial_path

    reference = work / f"{stage}_reference.h5"
    code, seconds = run(stage_args(stage, work, reference), work / "reference.log")
    assert code == 0, (work / "reference.log").read_text()
    out, folder = work / f"{stage}.h5", partial_path(work / f"{stage}.h5")
    found = {"kills": 0, "finished": 0, "logged": 0, "resumed": 0, "lost": 0, "identical": 0, "window_s": seconds,
             "in output write": 0}
    for _ in range(count):
        shutil.rmtree(folder, ignore_errors=True)
        out.unlink(missing_ok=True)
        moment = float(rng.uniform(0, seconds))
        code, _ = run(stage_args(stage, work, out), work / "killed.log", kill_after=moment)
        if code == 0:  # the moment fell after the job's end
            continue
        finished = len(list(folder.glob("batch_*.h5")))
        found["in output write"] += bool(list(work.glob(f".{out.name}.tmp-*")))  # a half-written output
        logged = len(set(re.findall(r"batch (\d+)/\d+ made", (work / "killed.log").read_text())))
        code, _ = run(stage_args(stage, work, out), work / "rerun.log")
        text = (work / "rerun.log").read_text()
        resumed = re.search(r"resumed from (\d+) batches", text)
        resumed = int(resumed.group(1)) if resumed else 0
        found["kills"] += 1
        found["finished"] += finished
        found["logged"] += logged
        found["resumed"] += resumed
        found["lost"] += max(finished, logged) - resumed
        found["identical"] += code == 0 and same_output(out, reference)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", nargs="+", default=["deepinversion", "extract"], choices=["deepinversion", "extract"])
    p.add_argument("--kills", type=int, default=16, help="kills per stage")
    p.add_argument("--images", type=int, default=2400, help="images of the extraction (150 batches of 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    p.add_argument("--write-readme", action="store_true", help="replace this benchmark's section in README.md")
    args = p.parse_args()
    FORKS.set_forkserver_preload(["torch", "h5py", "peekflow.cli", "peekflow.features.extract",
                                  "peekflow.prototypes.deepinversion"])
    warm = FORKS.Process(target=_nothing)  # starts the server (its imports), outside every timed run
    warm.start()
    warm.join()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="resume_kill_"))
    work.mkdir(parents=True, exist_ok=True)
    setup(work, args.images)
    rng = np.random.default_rng(args.seed)
    rows = ["| stage | kills (in the output write) | batches finished at the kills (files; logged) | resumed | lost | "
            "reruns identical | job s |", "|---|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(rows))
    for stage in args.stages:
        f = trials(stage, work, args.kills, rng)
        rows.append(f"| {stage} | {f['kills']} ({f['in output write']}) | {f['finished']}; {f['logged']} | "
                    f"{f['resumed']} | {f['lost']} | {f['identical']}/{f['kills']} | {f['window_s']:.2f} |")
        print(rows[-1], flush=True)
    import torch

    setup_line = (f"Setup: {args.kills} seeded moments per stage (seed {args.seed}; a moment after the job's end is "
                  f"no kill), small_resnet on 32 px images; deepinversion: 24 prototypes in 12 batches of 2, 30 "
                  f"steps; extract: {args.images} images in batches of 16, layers layer3 and layer4; device cpu "
                  f"({platform.machine()}, {os.cpu_count()} CPUs), torch {torch.__version__}, 1 torch thread.")
    print("\n" + setup_line)
    if args.write_readme:
        from readme_section import command_line, write_section

        write_section("resume_kill", "\n\n".join([
            "## Resume after a kill (`resume_kill.py`)",
            "Baseline: the uninterrupted job. Each job is SIGKILLed at a seeded moment drawn uniformly over the "
            "uninterrupted job's work, then rerun to its end. Finished = the batch files the kill left (each renamed "
            "into place whole) and, for rendering, the batches the killed job logged as made; resumed = the rerun's "
            "`resumed from N batches`; lost = finished - resumed; identical = the rerun's output equals the "
            "uninterrupted job's, every data set and attribute.",
            "\n".join(rows), setup_line, command_line()]))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
