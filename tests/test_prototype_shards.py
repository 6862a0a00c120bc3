"""Sharded, resumable prototype synthesis: merged shards equal a one-job run bit for bit (CPU), a killed job resumes
from its last finished batch, and a partial file of other settings is discarded."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import TINY_MODEL
from peekflow.cli import main
from peekflow.prototypes.store import read_prototypes

SETTINGS = {"size": 16, "per_class": 3, "steps": 3, "batch_size": 2}  # 3 classes x 3 = 9 prototypes, 5 batches


def synthesise(command, checkpoint, out, shard="0/1", env=None, **extra):
    args = [command, "--checkpoint", str(checkpoint), "--model", json.dumps(TINY_MODEL), "--settings",
            json.dumps({**SETTINGS, **extra}), "--device", "cpu", "--shard", shard, "--out", str(out)]
    if env is None:
        return main(args)
    module = "peekflow.cli.dream" if command == "dream" else f"peekflow.cli.{command}"
    return subprocess.run([sys.executable, "-m", module, *args[1:]], env={**os.environ, **env},
                          capture_output=True, text=True)


def assert_same_file(a, b):
    pa, pb = read_prototypes(a), read_prototypes(b)
    assert np.array_equal(pa.images, pb.images) and np.array_equal(pa.targets, pb.targets)
    assert np.array_equal(pa.losses, pb.losses) and pa.settings == pb.settings
    assert (pa.method, pa.model, pa.classes) == (pb.method, pb.model, pb.classes)


@pytest.mark.parametrize("command", ["deepinversion", "dream"])
def test_merged_shards_equal_one_job(tmp_path, tiny_checkpoint, command):
    assert synthesise(command, tiny_checkpoint, tmp_path / "whole.h5") == 0
    shards = [tmp_path / f"shard_{i}_of_3.h5" for i in range(3)]
    for i, path in enumerate(shards):
        assert synthesise(command, tiny_checkpoint, path, shard=f"{i}/3") == 0
    sizes = [len(read_prototypes(p).targets) for p in shards]
    assert sizes == [2, 4, 3]  # batches [0,1), [1,3), [3,5) of 2 prototypes
    assert read_prototypes(shards[1]).settings["shard"] == {"index": 1, "count": 3, "rows": [2, 6], "of": 9}
    grid = tmp_path / "merged.png"
    assert main(["merge-prototypes", "--shards", *map(str, shards), "--out", str(tmp_path / "merged.h5"),
                 "--grid", str(grid)]) == 0
    assert_same_file(tmp_path / "merged.h5", tmp_path / "whole.h5")
    assert grid.stat().st_size > 0 and not list(tmp_path.glob("*.partial"))


def test_merge_refuses_shards_out_of_order_or_of_other_settings(tmp_path, tiny_checkpoint, capsys):
    shards = [tmp_path / f"s{i}.h5" for i in range(2)]
    for i, path in enumerate(shards):
        assert synthesise("dream", tiny_checkpoint, path, shard=f"{i}/2") == 0
    assert main(["merge-prototypes", "--shards", str(shards[1]), str(shards[0]), "--out", str(tmp_path / "m.h5")]) == 1
    assert f"prototype file {shards[1]} is shard 1/2 of rows [4, 9], not shard 0/2 from row 0" in capsys.readouterr().err
    assert synthesise("dream", tiny_checkpoint, shards[1], shard="1/2", steps=4) == 0
    assert main(["merge-prototypes", "--shards", *map(str, shards), "--out", str(tmp_path / "m.h5")]) == 1
    assert f"prototype file {shards[1]} differs from {shards[0]} in ['steps']" in capsys.readouterr().err
    assert not (tmp_path / "m.h5").exists()


def test_more_shards_than_batches_is_refused(tmp_path, tiny_checkpoint, capsys):
    assert synthesise("dream", tiny_checkpoint, tmp_path / "x.h5", shard="0/6") == 1
    assert "shard 0/6 needs 0 <= I < S <= 5 (its 9 images make 5 batches of 2)" in capsys.readouterr().err


def test_a_killed_job_resumes_from_its_last_finished_batch(tmp_path, tiny_checkpoint):
    whole = tmp_path / "whole.h5"
    assert synthesise("deepinversion", tiny_checkpoint, whole) == 0
    out = tmp_path / "killed.h5"
    partial = tmp_path / "killed.h5.partial"
    killed = synthesise("deepinversion", tiny_checkpoint, out, env={"PEEKFLOW_TEST_KILL_AFTER_BATCHES": "2"})
    assert killed.returncode == 137 and not out.exists() and partial.exists()
    with h5py.File(partial) as h5:
        assert sorted(h5["batches"]) == ["0", "1"]
    other = synthesise("deepinversion", tiny_checkpoint, tmp_path / "x.h5", env={})  # unrelated: its own partial
    assert other.returncode == 0
    resumed = synthesise("deepinversion", tiny_checkpoint, out, env={})
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {partial}: 2 finished batch(es)" in resumed.stderr
    assert_same_file(out, whole) and not partial.exists()
    # a partial file of other settings is discarded, naming what changed
    killed = synthesise("deepinversion", tiny_checkpoint, out, env={"PEEKFLOW_TEST_KILL_AFTER_BATCHES": "1"}, steps=2)
    assert killed.returncode == 137
    again = synthesise("deepinversion", tiny_checkpoint, out, env={})
    assert again.returncode == 0 and f"starting afresh: partial file {partial} was made with other settings" in \
        again.stderr
    assert_same_file(out, whole)


def test_the_workflow_plans_one_job_per_shard_and_refuses_too_many(tmp_path):
    from workflow import planned_jobs, snakemake, tiny_config, write_config

    config = tiny_config()
    config["prototypes"]["methods"]["deepinversion"].update(batch_size=4, per_class=4)  # 12 prototypes: 3 batches
    config["prototypes"]["shards"] = {"deepinversion": 3}
    target = "results/prototypes/tiny_resnet/deepinversion.h5"
    planned = planned_jobs(snakemake(tmp_path, "-n", target, config=write_config(tmp_path, config)))
    assert planned.get("synthesize_prototype_shard") == 3 and planned.get("merge_prototype_shards") == 1
    assert "synthesize_prototypes" not in planned
    config["prototypes"]["shards"] = {"deepinversion": 4}
    refused = snakemake(tmp_path, "-n", target, config=write_config(tmp_path, config))
    assert refused.returncode != 0
    assert ("prototypes.shards.deepinversion: 4 shards, but its 12 prototypes make 3 batch(es) of 4: choose at "
            "most 3") in refused.stdout + refused.stderr


@pytest.mark.slow
def test_sharded_workflow_output_equals_the_one_job_file(tmp_path):
    from workflow import snakemake, tiny_config, write_config

    config = tiny_config()
    config["prototypes"]["methods"]["deepinversion"].update(batch_size=4, per_class=4)
    config["prototypes"]["shards"] = {"deepinversion": 2}
    target = "results/prototypes/tiny_resnet/deepinversion.h5"
    done = snakemake(tmp_path, "--cores", "2", target, config=write_config(tmp_path, config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list((tmp_path / "results/prototypes/tiny_resnet").glob("deepinversion/*.h5"))  # temp() shards
    spec = {"name": "tiny_resnet", **{k: v for k, v in config["models"]["tiny_resnet"].items()
                                      if k in ("arch", "num_classes", "arch_kwargs", "preprocessing")}}
    one = tmp_path / "one.h5"
    settings = config["prototypes"]["methods"]["deepinversion"]
    assert main(["deepinversion", "--checkpoint", str(tmp_path / "results/models/tiny_resnet/model.pt"), "--model",
                 json.dumps(spec), "--settings", json.dumps(settings), "--device", "cpu", "--out", str(one)]) == 0
    merged, alone = read_prototypes(tmp_path / target), read_prototypes(one)
    assert np.array_equal(merged.images, alone.images) and np.array_equal(merged.losses, alone.losses)
    assert {k: v for k, v in merged.settings.items() if k != "checkpoint"} == \
        {k: v for k, v in alone.settings.items() if k != "checkpoint"}


def test_caricature_shards_join_into_the_one_job_file(tmp_path, tiny_checkpoint):
    from conftest import write_folder

    images = write_folder(tmp_path / "images", ["a", "b", "c"], per_class=3)
    settings = {"layer": "layer3", "size": 16, "per_class": 2, "steps": 3, "batch_size": 2}

    def caricature(out, shard):
        return main(["caricature", "--checkpoint", str(tiny_checkpoint), "--model", json.dumps(TINY_MODEL),
                     "--images", str(images), "--settings", json.dumps(settings), "--device", "cpu", "--shard",
                     shard, "--out", str(out), "--grid", str(out.with_suffix(".png"))])

    assert caricature(tmp_path / "whole.h5", "0/1") == 0
    shards = [tmp_path / f"s{i}.h5" for i in range(2)]
    assert all(caricature(path, f"{i}/2") == 0 for i, path in enumerate(shards))
    grid = tmp_path / "merged.png"
    assert main(["merge-prototypes", "--shards", *map(str, shards), "--out", str(tmp_path / "merged.h5"),
                 "--grid", str(grid)]) == 1  # a caricature grid needs the model's preprocessing
    assert main(["merge-prototypes", "--shards", *map(str, shards), "--out", str(tmp_path / "merged.h5"),
                 "--model", json.dumps(TINY_MODEL), "--grid", str(grid)]) == 0
    assert_same_file(tmp_path / "merged.h5", tmp_path / "whole.h5")
    assert grid.read_bytes() == (tmp_path / "whole.png").read_bytes()  # references beside their caricatures


def test_the_workflow_plans_caricature_shards_and_refuses_too_many(tmp_path):
    from workflow import planned_jobs, snakemake, tiny_config, write_config

    config = tiny_config()
    config["prototypes"]["methods"]["caricature"].update(per_class=2, batch_size=2)  # 3 classes x 2: 3 batches
    config["prototypes"]["shards"] = {"caricature": 3}
    target = "results/prototypes/tiny_resnet/caricature.h5"
    planned = planned_jobs(snakemake(tmp_path, "-n", target, config=write_config(tmp_path, config)))
    assert planned.get("synthesize_caricature_shard") == 3 and planned.get("merge_caricature_shards") == 1
    assert "synthesize_caricatures" not in planned
    config["prototypes"]["shards"] = {"caricature": 4}
    refused = snakemake(tmp_path, "-n", target, config=write_config(tmp_path, config))
    assert refused.returncode != 0
    assert ("prototypes.shards.caricature: 4 shards, but its 6 prototypes make 3 batch(es) of 2: choose at most 3"
            in refused.stdout + refused.stderr)
