"""Every stage that keeps a partial folder -- extraction, prototypes (DeepInversion), caricatures, DORA and patches --
through the one shard-and-resume module (peekflow.shards), by one parametrised test each:

- merged shards equal a one-job run (bit for bit on the CPU; DeepDream too), and a merge refuses shards out of
  order, missing or of other settings, a job more shards than batches;
- a job SIGKILLed at any instant resumes: a chain of processes (a one-job run, or a shard of extraction and
  DeepInversion), each killed at a named point (key half written, batch half written, right after a batch was kept,
  output written but not renamed) or at a seeded moment of its work, ends with the uninterrupted job's output; each
  rerun logs "resumed from N batches" (N: every batch file the kill left) or "started afresh because ...", and a
  batch file truncated to 96 bytes is dropped, naming it;
- a partial folder of other settings or an unreadable one (the issue's 96-byte partial file of an older version, a
  half-written key) is discarded with a log line naming the file and the reason, never a failure; a job whose
  partial folder another live job holds fails naming the folder, the lock, the holder's pid and what to do, and a
  lock file left by a dead job is taken over;
- the workflow plans one job per shard (and refuses more shards than batches, before any job), and (slow) a
  workflow whose shard jobs were killed resumes them and merges them into the one-job outputs.

The killed jobs are real processes running `peekflow <stage>`, forked from a server that imported torch once
(multiprocessing's forkserver) rather than started afresh, which costs seconds of imports each."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import TINY_MODEL, write_folder
from peekflow.cli import main
from peekflow.prototypes.store import read_prototypes
from peekflow.shards import Batches, partial_path

FORKS = multiprocessing.get_context("forkserver")
FORKS.set_forkserver_preload(["torch", "h5py", "peekflow.cli", "peekflow.features.extract", "peekflow.neurons.dora",
                              "peekflow.neurons.patches", "peekflow.prototypes.deepinversion",
                              "peekflow.prototypes.caricature", "test_resume"])
STARTED = ("resumed from ", "started afresh because ")  # what a job logs once it holds its partial folder


def assert_same_store(a, b, maps=True):
    """Two feature stores hold the same data sets (shape, type, chunks, values) and attributes."""
    with h5py.File(a) as x, h5py.File(b) as y:
        names = []
        x.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert "logits" in names and ("maps/layer4" in names) == maps
        y.visititems(lambda name, obj: names.remove(name) if isinstance(obj, h5py.Dataset) else None)
        assert names == []  # the same data sets
        x.visititems(lambda name, obj: assert_same_dataset(obj, y[name]) if isinstance(obj, h5py.Dataset) else None)
        assert sorted(x.attrs) == sorted(y.attrs)
        for key in x.attrs:
            assert np.array_equal(x.attrs[key], y.attrs[key]), key


def assert_same_dataset(x, y):
    assert (x.shape, x.dtype, x.chunks) == (y.shape, y.dtype, y.chunks), x.name
    if x.dtype.kind == "O":
        assert list(x.asstr()[:]) == list(y.asstr()[:]), x.name
    else:
        assert x[:].tobytes() == y[:].tobytes(), x.name


def same_prototypes(a, b):
    pa, pb = read_prototypes(a), read_prototypes(b)
    assert np.array_equal(pa.images, pb.images) and np.array_equal(pa.targets, pb.targets)
    assert np.array_equal(pa.losses, pb.losses) and pa.settings == pb.settings
    assert (pa.method, pa.model, pa.classes) == (pb.method, pb.model, pb.classes)
    grid = Path(a).with_suffix(".png")
    if grid.exists():
        assert grid.read_bytes() == Path(b).with_suffix(".png").read_bytes()


def same_dora(a, b):
    from peekflow.neurons.dora_shards import FIELDS, read_signals

    assert Path(a).read_bytes() == Path(b).read_bytes()
    (one, one_settings), (two, two_settings) = (read_signals(Path(p).with_suffix(".signals.h5")) for p in (a, b))
    assert one_settings == two_settings and one_settings["layer"] == "layer4"
    for name in FIELDS:
        assert np.array_equal(getattr(one, name), getattr(two, name)), name


def same_patch_folders(a, b):
    """patches.h5's data sets and attributes, and every PNG's bytes, equal."""
    assert sorted(p.name for p in a.glob("[!.]*")) == sorted(p.name for p in b.glob("[!.]*"))
    with h5py.File(a / "patches.h5") as x, h5py.File(b / "patches.h5") as y:
        assert sorted(x) == sorted(y) and dict(x.attrs) == dict(y.attrs)
        for name in x:
            one, two = x[name][:], y[name][:]
            assert one.dtype == two.dtype and one.shape == two.shape, name
            assert one.tolist() == two.tolist() if one.dtype == object else one.tobytes() == two.tobytes(), name
    for png in a.glob("*.png"):
        assert png.read_bytes() == (b / png.name).read_bytes(), png.name


@dataclass
class Stage:
    command: str
    settings: dict
    batches: int  # of a one-job run
    shards: list[list[int]]  # rows [start, stop] of each of 3 shards
    one: str  # name of the one-job output
    same: callable
    other: dict  # a setting that another shard file must not differ in
    merge: tuple = ()  # further arguments of the merge
    killed: str = "0/1"  # the shard that the kill test kills

    def args(self, work: Path) -> list[str]:
        """The stage's arguments less --shard and --out, its inputs made in `work`."""
        model = ["--checkpoint", str(work / "model.pt"), "--model", json.dumps(TINY_MODEL), "--device", "cpu",
                 "--threads", "1", "--settings", json.dumps(self.settings)]
        return [self.command, *model, *INPUTS[self.command](work)]

    def one_job(self, work: Path, out: Path) -> list[str]:
        extra = {"dream": ["--grid", str(out.with_suffix(".png"))],
                 "caricature": ["--grid", str(out.with_suffix(".png"))],
                 "dora": ["--signals", str(out.with_suffix(".signals.h5"))]}.get(self.command, [])
        return [*self.args(work), "--out", str(out), *extra]

    def other_settings(self, argv: list[str]) -> list[str]:
        """`argv` with `other` settings."""
        return [json.dumps({**self.settings, **self.other}) if arg == json.dumps(self.settings) else arg
                for arg in argv]

    def killed_job(self, work: Path, out: Path) -> tuple[list[str], int]:
        """The job the kill test kills, writing `out`, and its number of batches."""
        if self.killed == "0/1":
            return self.one_job(work, out), self.batches
        index, count = map(int, self.killed.split("/"))
        batches = self.batches * (index + 1) // count - self.batches * index // count
        return [*self.args(work), "--shard", self.killed, "--out", str(out)], batches


def images(work: Path) -> Path:
    folder = work / "images"
    if not folder.exists():
        write_folder(folder, ["a", "b", "c"], per_class=5)
        (folder / "a" / "001.png").write_bytes(b"junk")  # skipped (skip_corrupt): its batch is one row short
    return folder


def topn(work: Path) -> Path:
    path = work / "topn.h5"
    if not path.exists():
        store = work / "topn_store.h5"
        settings = json.dumps({"layers": ["layer2"], "batch_size": 4, "skip_corrupt": True})
        assert main(["extract", "--checkpoint", str(work / "model.pt"), "--model", json.dumps(TINY_MODEL),
                     "--images", str(images(work)), "--dataset-name", "tiny", "--settings", settings, "--device",
                     "cpu", "--out", str(store)]) == 0
        assert main(["topn", "--store", str(store), "--layer", "layer2", "--n", "3", "--out", str(path)]) == 0
    return path


INPUTS = {
    "extract": lambda work: ["--images", str(images(work)), "--dataset-name", "tiny"],
    "deepinversion": lambda work: [],
    "dream": lambda work: [],
    "caricature": lambda work: ["--images", str(images(work))],
    "dora": lambda work: ["--layer", "layer4"],
    "patches": lambda work: ["--topn", str(topn(work))],
}
STAGES = {
    # 15 images (one unreadable) in 8 batches of 2
    "extract": Stage("extract", {"layers": ["layer2", "layer4"], "maps": ["layer4"], "batch_size": 2,
                                 "skip_corrupt": True}, 8, [[0, 4], [4, 10], [10, 15]], "one.h5", assert_same_store,
                     {"maps": []}, killed="1/2"),
    # 3 classes x 3 prototypes in 5 batches of 2 (a shard, batches 2-4, killed)
    "deepinversion": Stage("deepinversion", {"size": 16, "per_class": 3, "steps": 3, "batch_size": 2}, 5,
                           [[0, 2], [2, 6], [6, 9]], "one.h5", same_prototypes, {"steps": 4}, killed="1/2"),
    "dream": Stage("dream", {"size": 16, "per_class": 3, "steps": 3, "batch_size": 2}, 5, [[0, 2], [2, 6], [6, 9]],
                   "one.h5", same_prototypes, {"steps": 4}),
    # 3 classes x 2 references in 3 batches of 2
    "caricature": Stage("caricature", {"layer": "layer3", "size": 16, "per_class": 2, "steps": 3, "batch_size": 2},
                        3, [[0, 2], [2, 4], [4, 6]], "one.h5", same_prototypes, {"steps": 4},
                        ("--model", json.dumps(TINY_MODEL))),
    # layer4's 8 neurons in 4 batches of 2
    "dora": Stage("dora", {"size": 16, "steps": 3, "n_neighbors": 3, "batch_size": 2}, 4, [[0, 2], [2, 4], [4, 8]],
                  "one.csv", same_dora, {"steps": 4}),
    # layer2's 8 channels in 4 batches of 2
    "patches": Stage("patches", {"k": 2, "channel_batch": 2, "batch_size": 4}, 4, [[0, 2], [2, 4], [4, 8]], "one",
                     same_patch_folders, {"k": 3}),
}
KILLED = ["extract", "deepinversion", "caricature", "dora", "patches"]  # every stage that keeps a partial folder
MERGE = {"extract": "merge-features", "deepinversion": "merge-prototypes", "dream": "merge-prototypes",
         "caricature": "merge-prototypes", "dora": "merge-dora", "patches": "merge-patches"}
DIFFERS = {"extract": "['maps']", "deepinversion": "['steps']", "dream": "['steps']", "caricature": "['steps']",
           "dora": "['dora']", "patches": "['settings']"}
WHAT = {"extract": "feature store file", "deepinversion": "prototype file", "dream": "prototype file",
        "caricature": "prototype file", "dora": "DORA signal file", "patches": "patch file"}


@pytest.fixture
def work(tmp_path, tiny_checkpoint):
    assert tiny_checkpoint == tmp_path / "model.pt"
    return tmp_path


def merge_args(stage: Stage, shards: list[Path], out: Path) -> list[str]:
    grid = ["--grid", str(out.with_suffix(".png"))] if stage.command in ("dream", "caricature") else []
    signals = ["--signals", str(out.with_suffix(".signals.h5"))] if stage.command == "dora" else []
    return [MERGE[stage.command], "--shards", *map(str, shards), "--out", str(out), *grid, *signals, *stage.merge]


@pytest.mark.parametrize("name", STAGES)
def test_merged_shards_equal_one_job_and_bad_merges_are_refused(work, name, capsys):
    stage = STAGES[name]
    one = work / stage.one
    assert main(stage.one_job(work, one)) == 0
    shards = [work / f"shard_{i}_of_3.h5" for i in range(3)]
    for i, path in enumerate(shards):
        assert main([*stage.args(work), "--shard", f"{i}/3", "--out", str(path)]) == 0
    with h5py.File(shards[1]) as h5:  # a store or patch file: attribute shard; others: in their settings
        recorded = json.loads(h5.attrs["shard"]) if "shard" in h5.attrs else json.loads(h5.attrs["settings"])["shard"]
    assert recorded == {"index": 1, "count": 3, "rows": stage.shards[1], "of": stage.shards[2][1]}
    merged = work / f"merged{Path(stage.one).suffix}"
    assert main(merge_args(stage, shards, merged)) == 0
    stage.same(merged, one)
    assert not list(work.glob("*.partial")) and not list(work.glob(".*.tmp-*"))
    if name == "extract":  # copied in blocks of a few rows
        from peekflow.features.shards import merge_shards

        assert merge_shards(shards, merged, block_bytes=100) == 14
        stage.same(merged, one)
    if name == "patches":
        with h5py.File(one / "patches.h5") as h5:
            info = json.loads(h5.attrs["info"])
        assert "seconds" not in info and info["max_abs_diff_to_topn"] < 1e-4  # timing goes to the log, not the data
    if name == "caricature":  # its grid shows the references, in the model's preprocessing
        assert main(["merge-prototypes", "--shards", *map(str, shards), "--out", str(work / "x.h5"), "--grid",
                     str(work / "x.png")]) == 1
        assert "--grid of caricatures needs --model" in capsys.readouterr().err

    capsys.readouterr()
    assert main(merge_args(stage, [shards[1], shards[0], shards[2]], work / "x")) == 1
    assert (f"{WHAT[name]} {shards[1]} is shard 1/3 of rows {stage.shards[1]}, not shard 0/3 from row 0"
            in capsys.readouterr().err)
    assert main(merge_args(stage, shards[:2], work / "x")) == 1  # one missing
    assert f"{WHAT[name]} {shards[0]} is shard 0/3 of rows {stage.shards[0]}, not shard 0/2" in capsys.readouterr().err
    assert main([*stage.other_settings(stage.args(work)), "--shard", "2/3", "--out", str(shards[2])]) == 0
    assert main(merge_args(stage, shards, work / "x")) == 1
    assert f"{WHAT[name]} {shards[2]} differs from {shards[0]} in {DIFFERS[name]}" in capsys.readouterr().err
    for shard in ("3/3", "0/0", f"0/{stage.batches + 1}"):
        assert main([*stage.args(work), "--shard", shard, "--out", str(work / "y")]) == 1
        assert f"shard {shard} needs 0 <= I < S <= {stage.batches} (its" in capsys.readouterr().err
    assert not (work / "x").exists() and not (work / "y").exists() and not partial_path(work / "y").exists()


def _job(argv: list[str], log: str, kill: str | None) -> None:
    """In a forked process: `peekflow <argv>`, its output to `log`, PEEKFLOW_TEST_KILL=`kill`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.pop("PEEKFLOW_TEST_KILL", None)
    if kill:
        os.environ["PEEKFLOW_TEST_KILL"] = kill
    sys.exit(main(argv))


def run_job(argv: list[str], log: Path, kill: str | None = None, after: float | None = None) -> int:
    """Run `peekflow <argv>` in a process of its own, dying at the named point `kill`, or SIGKILLed `after` seconds
    into its work (once it logs that it holds its partial folder); its exit code (-9: killed)."""
    job = FORKS.Process(target=_job, args=(argv, str(log), kill))
    job.start()
    if after is not None:
        while job.is_alive() and not any(line in log.read_text() for line in STARTED if log.exists()):
            time.sleep(0.001)
        time.sleep(after)
        job.kill()
    job.join(120)
    assert job.exitcode is not None, f"{argv} did not end: {log.read_text()}"
    return job.exitcode


@pytest.mark.parametrize("name", KILLED)
def test_a_job_killed_at_any_instant_resumes_to_the_one_job_output(work, name, caplog):
    stage = STAGES[name]
    one, out = (work / f"{kind}{Path(stage.one).suffix if stage.killed == '0/1' else '.h5'}"
                for kind in ("one", "killed"))
    start = time.perf_counter()
    assert main(stage.killed_job(work, one)[0]) == 0
    seconds = time.perf_counter() - start  # the job's work (its process is forked from one with imports done)
    folder = partial_path(out)
    argv, batches_of_job = stage.killed_job(work, out)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    steps = [("key:1", None), ("batch:2", None), ("kept:1", "truncate"), ("time", None), ("time", None),
             ("time", None), ("final:1", None), (None, None)]
    for i, (kill, before) in enumerate(steps):
        batches = sorted(folder.glob("batch_*.h5"), key=lambda p: int(p.stem[6:]))
        if before == "truncate":  # a kept batch file cut to 96 bytes, like the HDF5 file without its data
            with open(batches[-1], "r+b") as f:
                f.truncate(96)
        key = folder / "key.json"
        whole, existed, keyed = len(batches) - (before == "truncate"), folder.exists(), key.exists()
        log = work / f"step{i}.log"
        if kill == "time":  # a seeded moment of the work left, as the one-job run took it
            after = float(rng.uniform(0.05, 0.8)) * seconds * (1 - whole / batches_of_job)
            code = run_job(argv, log, after=after)
        else:
            code = run_job(argv, log, kill)
        text = log.read_text()
        if not existed:
            assert "started afresh because" in text and "did not exist" in text, text
        elif not keyed:
            assert f"started afresh because {key} holds no key" in text, text
        else:
            assert f"resumed from {whole} batches in {folder}" in text, text  # no finished batch lost
        if before == "truncate":
            assert f"dropped batch file {batches[-1]}: unreadable" in text, text
        if i and steps[i - 1][0] == "final:1":  # what the kill left half written beside the output
            assert "left half written by a killed job" in text, text
        if kill is None or kill == "time" and (code == 0 or out.exists()):
            break  # the job ran to its end, or the moment fell after its output was renamed into place (whole)
        assert code == -signal.SIGKILL and not out.exists(), text
    assert code == 0 or kill == "time" and code == -signal.SIGKILL, text
    stage.same(out, one)
    assert not folder.exists() and not list(work.glob(".*.tmp-*")) and not list(work.glob(".*.tmp"))


@pytest.mark.parametrize("name", KILLED)
def test_a_partial_of_other_settings_or_unreadable_is_discarded_and_a_locked_one_refused(work, name, caplog,
                                                                                           capsys):
    stage = STAGES[name]
    one = work / stage.one
    assert main(stage.one_job(work, one)) == 0
    out = work / f"again{Path(stage.one).suffix}"
    partial = partial_path(out)
    caplog.set_level(logging.INFO, logger="peekflow")

    other = stage.other_settings(stage.one_job(work, out))
    assert run_job(other, work / "other.log", "kept:1") == -signal.SIGKILL  # a kept batch of other settings
    assert main(stage.one_job(work, out)) == 0
    assert re.search(rf"started afresh because {re.escape(str(partial))} was made with other [a-z, ]*settings",
                     caplog.text)
    stage.same(out, one)

    partial.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))  # the 96-byte partial file (an older version's)
    assert main(stage.one_job(work, out)) == 0
    assert f"started afresh because {partial} is a partial file of an older version" in caplog.text
    stage.same(out, one)

    partial.mkdir()
    (partial / "key.json").write_text('{"model weights": "ab')  # half a key: what no job of this version leaves
    (partial / "batch_0.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))
    caplog.clear()
    assert main(stage.one_job(work, out)) == 0
    assert f"started afresh because {partial / 'key.json'} is unreadable" in caplog.text
    stage.same(out, one)

    holder = Batches(partial, {"another": "job"})  # a live job holds the folder (flock)
    capsys.readouterr()
    assert main(stage.one_job(work, out)) == 1
    assert (f"{partial} is in use by another job (pid {os.getpid()} on {os.uname().nodename} holds the lock "
            f"{partial / 'lock'}): wait for it to end or stop it" in capsys.readouterr().err)
    holder.close(finished=False)
    (partial / "lock").write_text("999999999 on elsewhere\n")  # left by a job that died
    assert main(stage.one_job(work, out)) == 0
    stage.same(out, one)
    assert not partial.exists()


def test_the_workflow_plans_one_job_per_shard_and_refuses_more_shards_than_batches(tmp_path):
    from workflow import planned_jobs, snakemake, tiny_config, write_config

    config = tiny_config()
    config["extract"] = {"batch_size": 4, "shards": {"shapes_train": 3}}  # 72 images: 3 shards of 6 batches
    config["prototypes"]["methods"]["deepinversion"].update(batch_size=4, per_class=4)  # 12 prototypes: 3 batches
    config["prototypes"]["methods"]["caricature"].update(per_class=2, batch_size=2)  # 3 classes x 2: 3 batches
    config["prototypes"]["shards"] = {"deepinversion": 3, "caricature": 3}
    config["labels"]["dora"]["batch_size"] = 4  # layer4's 16 neurons: 4 batches
    config["labels"]["shards"] = {"dora": 4}
    config["neurons"]["patches"] = {"channels": "0:4", "k": 2, "channel_batch": 1}  # 4 batches of 1 channel
    config["neurons"]["shards"] = {"patches": 4}
    targets = ["results/features/tiny_resnet/shapes_train.h5", "results/prototypes/tiny_resnet/deepinversion.h5",
               "results/prototypes/tiny_resnet/caricature.h5", "results/neurons/tiny_resnet/layer4/dora.csv",
               "results/neurons/tiny_resnet/layer4/patches"]
    planned = planned_jobs(snakemake(tmp_path, "-n", *targets, config=write_config(tmp_path, config)))
    assert {rule: planned.get(rule) for rule in ("extract_feature_shard", "merge_feature_shards",
                                                 "synthesize_prototype_shard", "merge_prototype_shards",
                                                 "synthesize_caricature_shard", "merge_caricature_shards",
                                                 "synthesize_dora_signal_shard", "merge_dora_signal_shards",
                                                 "extract_patch_shard", "merge_patch_shards")} == {
        "extract_feature_shard": 3, "merge_feature_shards": 1, "synthesize_prototype_shard": 3,
        "merge_prototype_shards": 1, "synthesize_caricature_shard": 3, "merge_caricature_shards": 1,
        "synthesize_dora_signal_shard": 4, "merge_dora_signal_shards": 1, "extract_patch_shard": 4,
        "merge_patch_shards": 1}
    assert not {"synthesize_prototypes", "synthesize_caricatures", "find_outlier_neurons",
                "extract_patches"} & set(planned)
    config["prototypes"]["shards"] = {"deepinversion": 4, "caricature": 4}
    config["labels"]["shards"] = {"dora": 5}
    config["neurons"]["shards"] = {"patches": 5}
    refused = snakemake(tmp_path, "-n", *targets, config=write_config(tmp_path, config))
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0
    for problem in ["prototypes.shards.deepinversion: 4 shards, but its 12 prototypes make 3 batch(es) of 4: choose "
                    "at most 3", "prototypes.shards.caricature: 4 shards, but its 6 prototypes make 3 batch(es) of 2: "
                    "choose at most 3", "labels.shards.dora: 5 shards, but the 16 neurons of tiny_resnet's layer4 "
                    "make 4 batch(es) of 4 s-AMS (1 per neuron): choose at most 4", "neurons.shards.patches: 5 "
                    "shards, but the 4 selected channels of tiny_resnet's layer4 make 4 batch(es) of 1 "
                    "(neurons.patches.channel_batch): choose at most 4"]:
        assert problem in said, said[-3000:]


@pytest.mark.slow
def test_workflow_resumes_killed_shard_jobs_and_merges_them_into_the_one_job_outputs(tmp_path, monkeypatch):
    """Every shard job of extraction, DeepInversion and DORA dies right after keeping its first batch; Snakemake keeps
    their partial folders (not outputs), the rerun resumes them, and the merged files equal one job's."""
    from workflow import snakemake, tiny_config, write_config

    config = tiny_config()
    config["extract"] = {"batch_size": 4, "shards": {"shapes_train": 3}}  # 72 images: 3 shards of 6 batches
    config["prototypes"]["methods"]["deepinversion"].update(batch_size=4, per_class=4)
    config["prototypes"]["shards"] = {"deepinversion": 2}
    config["labels"]["dora"]["batch_size"] = 4
    config["labels"]["shards"] = {"dora": 2}
    config["neurons"]["patches"] = {"channels": "0:4", "k": 2, "channel_batch": 2}
    config["neurons"]["shards"] = {"patches": 2}
    write_config(tmp_path, config)
    store, protos = "results/features/tiny_resnet/shapes_train.h5", "results/prototypes/tiny_resnet/deepinversion.h5"
    dora, patches = "results/neurons/tiny_resnet/layer4/dora.csv", "results/neurons/tiny_resnet/layer4/patches"
    targets = [store, protos, dora]
    shards = [tmp_path / f"results/features/tiny_resnet/shapes_train/shard_{i}_of_3.h5" for i in range(3)]

    monkeypatch.setenv("PEEKFLOW_TEST_KILL", "kept:1")
    killed = snakemake(tmp_path, "--cores", "2", "--keep-going", *targets)
    assert killed.returncode != 0 and not any((tmp_path / target).exists() for target in targets)
    assert all(partial_path(shard).is_dir() and not shard.exists() for shard in shards)
    monkeypatch.delenv("PEEKFLOW_TEST_KILL")
    done = snakemake(tmp_path, "--cores", "2", *targets, patches)
    assert done.returncode == 0, done.stderr[-3000:]
    for i in range(3):
        log = (tmp_path / f"logs/features/tiny_resnet/shapes_train/shard_{i}_of_3.log").read_text()
        assert "resumed from 1 batches" in log, log
    assert not list(tmp_path.glob("results/**/*.partial")) and not list(tmp_path.glob("results/**/*.h5.tmp-*"))
    assert "Nothing to be done" in snakemake(tmp_path, "-n", *targets, patches).stdout

    monkeypatch.chdir(tmp_path)  # one job each, with the paths as the rules give them (a patch folder records them)
    spec = json.dumps({"name": "tiny_resnet", **{k: v for k, v in config["models"]["tiny_resnet"].items()
                                                 if k in ("arch", "num_classes", "arch_kwargs", "preprocessing")}})
    model = ["--checkpoint", "results/models/tiny_resnet/model.pt", "--model", spec, "--device", "cpu", "--threads",
             "1"]
    layers = {"layers": config["models"]["tiny_resnet"]["layers"], "batch_size": 4}
    assert main(["extract", *model, "--images", "resources/datasets/shapes/train", "--dataset-name", "shapes_train",
                 "--settings", json.dumps(layers), "--out", "one.h5"]) == 0
    assert_same_store("one.h5", store, maps=False)
    assert main(["deepinversion", *model, "--settings", json.dumps(config["prototypes"]["methods"]["deepinversion"]),
                 "--out", "one_protos.h5"]) == 0
    merged, alone = read_prototypes(protos), read_prototypes("one_protos.h5")
    assert np.array_equal(merged.images, alone.images) and np.array_equal(merged.losses, alone.losses)
    assert {k: v for k, v in merged.settings.items() if k != "checkpoint"} == \
        {k: v for k, v in alone.settings.items() if k != "checkpoint"}
    assert main(["dora", *model, "--layer", "layer4", "--settings", json.dumps(config["labels"]["dora"]), "--out",
                 "one.csv"]) == 0
    assert Path("one.csv").read_bytes() == Path(dora).read_bytes()
    assert main(["patches", *model, "--topn", "results/neurons/tiny_resnet/layer4/topn.h5", "--settings",
                 json.dumps(config["neurons"]["patches"]), "--out", "one"]) == 0
    same_patch_folders(Path(patches), Path("one"))
