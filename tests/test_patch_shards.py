"""Sharded, resumable patch search: merged shards equal a one-job run bit for bit (CPU: patches.h5's data sets and the
PNGs), a killed job resumes from its last finished channel batch, a partial file of other settings is discarded,
and too many shards are refused (by the job and before the workflow's first job)."""

import json
import os
import subprocess
import sys

import h5py
import pytest

from conftest import TINY_MODEL, write_folder
from peekflow.cli import main

SETTINGS = {"k": 2, "channel_batch": 2, "batch_size": 4}  # layer2: 8 channels, 4 batches of 2


@pytest.fixture
def topn(tmp_path, tiny_checkpoint):
    images = write_folder(tmp_path / "images", ["a", "b", "c"], per_class=4)
    store, topn = tmp_path / "store.h5", tmp_path / "topn.h5"
    settings = json.dumps({"layers": ["layer2"], "batch_size": 4})
    assert main(["extract", "--checkpoint", str(tiny_checkpoint), "--model", json.dumps(TINY_MODEL), "--images",
                 str(images), "--dataset-name", "tiny", "--settings", settings, "--device", "cpu", "--out",
                 str(store)]) == 0
    assert main(["topn", "--store", str(store), "--layer", "layer2", "--n", "3", "--out", str(topn)]) == 0
    return topn


def patches(checkpoint, topn, out, shard="0/1", env=None, **extra):
    args = ["patches", "--model", json.dumps(TINY_MODEL), "--checkpoint", str(checkpoint), "--topn", str(topn),
            "--settings", json.dumps({**SETTINGS, **extra}), "--device", "cpu", "--shard", shard, "--out", str(out)]
    if env is None:
        return main(args)
    return subprocess.run([sys.executable, "-m", "peekflow.cli.patches", *args[1:]], env={**os.environ, **env},
                          capture_output=True, text=True)


def same_folders(a, b):
    """patches.h5's data sets and attributes, and every PNG's bytes, equal (Snakemake's hidden marker aside)."""
    assert sorted(p.name for p in a.glob("[!.]*")) == sorted(p.name for p in b.glob("[!.]*"))
    with h5py.File(a / "patches.h5") as x, h5py.File(b / "patches.h5") as y:
        assert sorted(x) == sorted(y) and dict(x.attrs) == dict(y.attrs)
        for name in x:
            a_, b_ = x[name][:], y[name][:]
            assert a_.dtype == b_.dtype and a_.shape == b_.shape, name
            same = a_.tolist() == b_.tolist() if a_.dtype == object else a_.tobytes() == b_.tobytes()
            assert same, name
    for png in a.glob("*.png"):
        assert png.read_bytes() == (b / png.name).read_bytes(), png.name


def test_merged_shards_equal_one_job(tmp_path, tiny_checkpoint, topn):
    whole = tmp_path / "whole"
    assert patches(tiny_checkpoint, topn, whole) == 0
    shards = [tmp_path / f"shard_{i}_of_3.h5" for i in range(3)]
    for i, path in enumerate(shards):
        assert patches(tiny_checkpoint, topn, path, shard=f"{i}/3") == 0
    with h5py.File(shards[2]) as h5:
        assert list(h5["channels"][:]) == [4, 5, 6, 7]  # batches [2, 4) of 2 channels
        assert json.loads(h5.attrs["shard"]) == {"index": 2, "count": 3, "rows": [4, 8], "of": 8}
    merged = tmp_path / "merged"
    assert main(["merge-patches", "--shards", *map(str, shards), "--out", str(merged)]) == 0
    same_folders(merged, whole)
    with h5py.File(whole / "patches.h5") as h5:
        info = json.loads(h5.attrs["info"])
    assert "seconds" not in info and info["max_abs_diff_to_topn"] < 1e-4  # timing goes to the log, not the data
    assert not list(tmp_path.glob("*.partial"))


def test_merge_refuses_shards_out_of_order_or_of_other_settings(tmp_path, tiny_checkpoint, topn, capsys):
    shards = [tmp_path / f"s{i}.h5" for i in range(2)]
    for i, path in enumerate(shards):
        assert patches(tiny_checkpoint, topn, path, shard=f"{i}/2") == 0
    out = tmp_path / "m"
    assert main(["merge-patches", "--shards", str(shards[1]), str(shards[0]), "--out", str(out)]) == 1
    assert f"patch file {shards[1]} is shard 1/2 of rows [4, 8], not shard 0/2 from row 0" in capsys.readouterr().err
    assert patches(tiny_checkpoint, topn, shards[1], shard="1/2", k=3) == 0
    assert main(["merge-patches", "--shards", *map(str, shards), "--out", str(out)]) == 1
    assert f"patch file {shards[1]} differs from {shards[0]} in ['settings']" in capsys.readouterr().err
    assert not out.exists()


def test_more_shards_than_channel_batches_is_refused(tmp_path, tiny_checkpoint, topn, capsys):
    assert patches(tiny_checkpoint, topn, tmp_path / "x.h5", shard="0/5") == 1
    assert "patches layer2: shard 0/5 needs 0 <= I < S <= 4 (its 8 channels make 4 batches of 2)" in \
        capsys.readouterr().err


def test_a_killed_job_resumes_from_its_last_finished_batch(tmp_path, tiny_checkpoint, topn):
    whole = tmp_path / "whole"  # a subprocess, as the killed job: the same torch threads, the same bits
    assert patches(tiny_checkpoint, topn, whole, env={}).returncode == 0
    out, partial = tmp_path / "killed", tmp_path / "killed.partial"
    killed = patches(tiny_checkpoint, topn, out, env={"PEEKFLOW_TEST_KILL_AFTER_BATCHES": "2"})
    assert killed.returncode == 137 and not out.exists() and partial.exists()
    with h5py.File(partial) as h5:
        assert sorted(h5["batches"]) == ["0", "1"]
    resumed = patches(tiny_checkpoint, topn, out, env={})
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {partial}: 2 finished batch(es)" in resumed.stderr
    assert "patches layer2: channel batch 4/4 done" in resumed.stderr
    same_folders(out, whole)
    assert not partial.exists()
    # a partial file of other settings is discarded, naming what changed
    killed = patches(tiny_checkpoint, topn, out, env={"PEEKFLOW_TEST_KILL_AFTER_BATCHES": "1"}, k=3)
    assert killed.returncode == 137 and partial.exists()
    again = patches(tiny_checkpoint, topn, out, env={})
    assert again.returncode == 0 and f"starting afresh: partial file {partial} was made with other settings" in \
        again.stderr
    same_folders(out, whole)


def test_the_workflow_plans_one_job_per_shard_and_refuses_too_many(tmp_path):
    from workflow import planned_jobs, snakemake, tiny_config, write_config

    config = tiny_config()
    config["neurons"]["patches"] = {"channels": "0:4", "k": 2, "channel_batch": 1}  # 4 batches of 1 channel
    config["neurons"]["shards"] = {"patches": 4}
    target = "results/neurons/tiny_resnet/layer4/patches"
    planned = planned_jobs(snakemake(tmp_path, "-n", target, config=write_config(tmp_path, config)))
    assert planned.get("extract_patch_shard") == 4 and planned.get("merge_patch_shards") == 1
    assert "extract_patches" not in planned
    config["neurons"]["shards"] = {"patches": 5}
    refused = snakemake(tmp_path, "-n", target, config=write_config(tmp_path, config))
    assert refused.returncode != 0
    assert ("neurons.shards.patches: 5 shards, but the 4 selected channels of tiny_resnet's layer4 make 4 batch(es) "
            "of 1 (neurons.patches.channel_batch): choose at most 4") in refused.stdout + refused.stderr


def test_sharded_workflow_output_equals_the_one_job_folder(tmp_path, monkeypatch):
    from workflow import snakemake, tiny_config, write_config

    config = tiny_config()
    config["neurons"]["patches"] = {"channels": "0:4", "k": 2, "channel_batch": 2}
    config["neurons"]["shards"] = {"patches": 2}
    target = "results/neurons/tiny_resnet/layer4/patches"
    done = snakemake(tmp_path, "--cores", "2", target, config=write_config(tmp_path, config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list((tmp_path / "results/neurons/tiny_resnet/layer4").glob("patch_shards/*.h5"))  # temp() shards
    spec = {"name": "tiny_resnet", **{k: v for k, v in config["models"]["tiny_resnet"].items()
                                      if k in ("arch", "num_classes", "arch_kwargs", "preprocessing")}}
    monkeypatch.chdir(tmp_path)  # the paths as the rule gives them: the folder records them
    assert main(["patches", "--checkpoint", "results/models/tiny_resnet/model.pt", "--model", json.dumps(spec),
                 "--topn", "results/neurons/tiny_resnet/layer4/topn.h5", "--settings",
                 json.dumps(config["neurons"]["patches"]), "--device", "cpu", "--threads", "1", "--out", "one"]) == 0
    same_folders(tmp_path / target, tmp_path / "one")
