"""Sharded, resumable DORA: merged shards equal a one-job run bit for bit (CPU), a killed job resumes from its last
finished batch, a partial file of other settings is discarded, and too many shards are refused."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import TINY_MODEL
from peekflow.cli import main
from peekflow.models.spec import ModelSpec, load_spec
from peekflow.neurons.dora import DoraSettings, dora_signals
from peekflow.neurons.dora_shards import FIELDS, merge_dora_shards
from peekflow.settings import parse_settings

SETTINGS = {"size": 16, "steps": 3, "n_neighbors": 3, "batch_size": 2}  # layer4: 8 neurons, 4 batches of 2


def dora(checkpoint, out, shard="0/1", env=None, figure=None, signals=None, **extra):
    args = ["dora", "--model", json.dumps(TINY_MODEL), "--checkpoint", str(checkpoint), "--layer", "layer4",
            "--settings", json.dumps({**SETTINGS, **extra}), "--device", "cpu", "--shard", shard, "--out", str(out)]
    args += ["--figure", str(figure)] if figure else []
    args += ["--signals", str(signals)] if signals else []
    if env is None:
        return main(args)
    return subprocess.run([sys.executable, "-m", "peekflow.cli.dora", *args[1:]], env={**os.environ, **env},
                          capture_output=True, text=True)


def test_merged_shards_equal_one_job(tmp_path, tiny_checkpoint):
    assert dora(tiny_checkpoint, tmp_path / "whole.csv", signals=tmp_path / "whole_signals.h5") == 0
    shards = [tmp_path / f"shard_{i}_of_3.h5" for i in range(3)]
    for i, path in enumerate(shards):
        assert dora(tiny_checkpoint, path, shard=f"{i}/3") == 0
    with h5py.File(shards[2]) as h5:
        assert list(h5["neurons"][:]) == [4, 5, 6, 7]  # batches [2, 4) of 2 neurons
        assert json.loads(h5.attrs["settings"])["shard"] == {"index": 2, "count": 3, "rows": [4, 8], "of": 8}
    figure = tmp_path / "merged.png"
    assert main(["merge-dora", "--shards", *map(str, shards), "--out", str(tmp_path / "merged.csv"),
                 "--figure", str(figure), "--signals", str(tmp_path / "merged_signals.h5")]) == 0
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert figure.stat().st_size > 0 and not list(tmp_path.glob("*.partial"))
    # the signals themselves, bit for bit, against an in-process one-job run
    spec = parse_settings(ModelSpec, json.dumps(TINY_MODEL), "--model")
    model, _ = load_spec(spec, tiny_checkpoint)
    whole = dora_signals(model, "layer4", spec.preprocess(), DoraSettings(**SETTINGS), device="cpu")
    merged, settings = merge_dora_shards(shards)
    assert settings["layer"] == "layer4" and "shard" not in settings
    for name in FIELDS:
        assert np.array_equal(getattr(merged, name), getattr(whole, name)), name
    # the layer's signal file (every neuron's s-AMS, read by the atlas): the same from both routes
    from peekflow.neurons.dora_shards import read_signals

    (one, one_settings), (joined, joined_settings) = (read_signals(tmp_path / f"{kind}_signals.h5")
                                                      for kind in ("whole", "merged"))
    assert one_settings == joined_settings and one_settings["layer"] == "layer4"
    for name in FIELDS:
        assert np.array_equal(getattr(one, name), getattr(whole, name)), name
        assert np.array_equal(getattr(joined, name), getattr(whole, name)), name


def test_merge_refuses_shards_out_of_order_or_of_other_settings(tmp_path, tiny_checkpoint, capsys):
    shards = [tmp_path / f"s{i}.h5" for i in range(2)]
    for i, path in enumerate(shards):
        assert dora(tiny_checkpoint, path, shard=f"{i}/2") == 0
    out = tmp_path / "m.csv"
    assert main(["merge-dora", "--shards", str(shards[1]), str(shards[0]), "--out", str(out)]) == 1
    assert f"DORA signal file {shards[1]} is shard 1/2 of rows [4, 8], not shard 0/2 from row 0" in \
        capsys.readouterr().err
    assert dora(tiny_checkpoint, shards[1], shard="1/2", steps=4) == 0
    assert main(["merge-dora", "--shards", *map(str, shards), "--out", str(out)]) == 1
    assert f"DORA signal file {shards[1]} differs from {shards[0]} in ['dora']" in capsys.readouterr().err
    assert not out.exists()


def test_more_shards_than_batches_is_refused(tmp_path, tiny_checkpoint, capsys):
    assert dora(tiny_checkpoint, tmp_path / "x.h5", shard="0/5") == 1
    assert "shard 0/5 needs 0 <= I < S <= 4 (its 8 images make 4 batches of 2)" in capsys.readouterr().err


def test_a_killed_job_resumes_from_its_last_finished_batch(tmp_path, tiny_checkpoint):
    whole = tmp_path / "whole.csv"  # a subprocess, as the killed job: the same torch threads, the same bits
    assert dora(tiny_checkpoint, whole, env={}).returncode == 0
    out, partial = tmp_path / "killed.csv", tmp_path / "killed.csv.partial"
    killed = dora(tiny_checkpoint, out, env={"PEEKFLOW_TEST_KILL_AFTER_BATCHES": "2"})
    assert killed.returncode == 137 and not out.exists() and partial.exists()
    with h5py.File(partial) as h5:
        assert sorted(h5["batches"]) == ["0", "1"]
    resumed = dora(tiny_checkpoint, out, env={})
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {partial}: 2 finished batch(es)" in resumed.stderr
    assert "dora layer4: batch 3/4 done" in resumed.stderr and "batch 1/4" in resumed.stderr
    assert out.read_bytes() == whole.read_bytes() and not partial.exists()
    # a partial file of other settings is discarded, naming what changed
    killed = dora(tiny_checkpoint, out, env={"PEEKFLOW_TEST_KILL_AFTER_BATCHES": "1"}, steps=2)
    assert killed.returncode == 137 and partial.exists()
    again = dora(tiny_checkpoint, out, env={})
    assert again.returncode == 0 and f"starting afresh: partial file {partial} was made with other settings" in \
        again.stderr
    assert out.read_bytes() == whole.read_bytes()


def test_the_workflow_plans_one_job_per_shard_and_refuses_too_many(tmp_path):
    from workflow import planned_jobs, snakemake, tiny_config, write_config

    config = tiny_config()
    config["labels"]["dora"]["batch_size"] = 4  # layer4's 16 neurons: 4 batches
    config["labels"]["shards"] = {"dora": 4}
    target = "results/neurons/tiny_resnet/layer4/dora.csv"
    planned = planned_jobs(snakemake(tmp_path, "-n", target, config=write_config(tmp_path, config)))
    assert planned.get("synthesize_dora_signal_shard") == 4 and planned.get("merge_dora_signal_shards") == 1
    assert "find_outlier_neurons" not in planned
    config["labels"]["shards"] = {"dora": 5}
    refused = snakemake(tmp_path, "-n", target, config=write_config(tmp_path, config))
    assert refused.returncode != 0
    assert ("labels.shards.dora: 5 shards, but the 16 neurons of tiny_resnet's layer4 make 4 batch(es) of 4 s-AMS "
            "(1 per neuron): choose at most 4") in refused.stdout + refused.stderr


@pytest.mark.slow
def test_sharded_workflow_output_equals_the_one_job_table(tmp_path):
    from workflow import snakemake, tiny_config, write_config

    config = tiny_config()
    config["labels"]["dora"]["batch_size"] = 4
    config["labels"]["shards"] = {"dora": 2}
    target = "results/neurons/tiny_resnet/layer4/dora.csv"
    done = snakemake(tmp_path, "--cores", "2", target, config=write_config(tmp_path, config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list((tmp_path / "results/neurons/tiny_resnet/layer4").glob("dora/*.h5"))  # temp() shards
    spec = {"name": "tiny_resnet", **{k: v for k, v in config["models"]["tiny_resnet"].items()
                                      if k in ("arch", "num_classes", "arch_kwargs", "preprocessing")}}
    one = tmp_path / "one.csv"
    assert main(["dora", "--checkpoint", str(tmp_path / "results/models/tiny_resnet/model.pt"), "--model",
                 json.dumps(spec), "--layer", "layer4", "--settings", json.dumps(config["labels"]["dora"]),
                 "--device", "cpu", "--threads", "1", "--out", str(one)]) == 0
    assert one.read_bytes() == (tmp_path / target).read_bytes()
