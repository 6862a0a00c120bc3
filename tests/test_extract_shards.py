"""Sharded, resumable extraction: a killed shard continues from its last flushed batch, and merged shards equal an
unsharded store (every data set and attribute, value for value)."""

import json
import logging
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from peekflow.cli import main
from peekflow.features.shards import merge_shards
from peekflow.features.store import partial_path

from conftest import TINY_MODEL

SETTINGS = {"layers": ["layer2", "layer4"], "maps": ["layer4"], "batch_size": 2}


def extract_args(images, checkpoint, out, shard="0/1", **settings):
    return ["extract", "--checkpoint", str(checkpoint), "--model", json.dumps(TINY_MODEL), "--images", str(images),
            "--dataset-name", "tiny", "--settings", json.dumps({**SETTINGS, **settings}), "--device", "cpu", "--shard", shard,
            "--threads", "1", "--out", str(out)]


def killed_extract(images, checkpoint, out, after_batches: int, **kw):
    """`peekflow extract` in a subprocess that dies (os._exit) after `after_batches` flushed batches."""
    env = {**os.environ, "PEEKFLOW_TEST_KILL_AFTER_BATCHES": str(after_batches)}
    cmd = [sys.executable, "-m", "peekflow.cli.extract", *extract_args(images, checkpoint, out, **kw)[1:]]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def assert_same_store(a, b, maps=True):
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


def test_killed_shard_resumes_and_equals_an_uninterrupted_run(tmp_path, image_folder, tiny_checkpoint, caplog):
    caplog.set_level(logging.INFO)
    (image_folder / "a" / "001.png").write_bytes(b"junk")  # a skipped image before the kill: resumed too
    whole, resumed = tmp_path / "whole.h5", tmp_path / "resumed.h5"
    assert main(extract_args(image_folder, tiny_checkpoint, whole, "0/2", skip_corrupt=True)) == 0

    killed = killed_extract(image_folder, tiny_checkpoint, resumed, 2, shard="0/2", skip_corrupt=True)
    assert killed.returncode == 137, killed.stderr
    assert not resumed.exists()
    with h5py.File(partial_path(resumed)) as h5:  # rows 0:4 flushed (image 1 skipped), batch 2 written, not recorded
        assert not h5.attrs["complete"] and json.loads(h5.attrs["resume_done"])["items"] == 4

    assert main(extract_args(image_folder, tiny_checkpoint, resumed, "0/2", skip_corrupt=True)) == 0
    assert "at row 3 (4 of 8 images done)" in caplog.text
    assert not partial_path(resumed).exists()
    assert_same_store(whole, resumed)


def test_changed_settings_start_afresh(tmp_path, image_folder, tiny_checkpoint, caplog):
    caplog.set_level(logging.INFO)
    out, fresh = tmp_path / "out.h5", tmp_path / "fresh.h5"
    assert killed_extract(image_folder, tiny_checkpoint, out, 3).returncode == 137
    assert main(extract_args(image_folder, tiny_checkpoint, out, batch_size=3)) == 0
    assert "starting" in caplog.text and "afresh: it was made with other settings" in caplog.text
    assert main(extract_args(image_folder, tiny_checkpoint, fresh, batch_size=3)) == 0
    assert_same_store(fresh, out)


def test_merged_shards_equal_the_unsharded_store(tmp_path, image_folder, tiny_checkpoint):
    whole = tmp_path / "whole.h5"
    assert main(extract_args(image_folder, tiny_checkpoint, whole)) == 0
    shards = [tmp_path / f"shard_{i}_of_3.h5" for i in range(3)]
    for i, (shard, rows) in enumerate(zip(shards, [[0, 4], [4, 10], [10, 15]])):  # between batches of 2
        assert main(extract_args(image_folder, tiny_checkpoint, shard, f"{i}/3")) == 0
        with h5py.File(shard) as h5:
            assert json.loads(h5.attrs["shard"])["rows"] == rows and h5["labels"].shape == (rows[1] - rows[0],)
    merged = tmp_path / "merged.h5"
    assert main(["merge-features", "--shards", *map(str, shards), "--out", str(merged)]) == 0
    assert_same_store(whole, merged)
    assert merge_shards(shards, merged, block_bytes=100) == 15  # copied in blocks of a few rows
    assert_same_store(whole, merged)


def test_merge_refuses_shards_out_of_order_or_missing(tmp_path, image_folder, tiny_checkpoint, capsys):
    shards = [tmp_path / f"shard_{i}_of_3.h5" for i in range(3)]
    for i, shard in enumerate(shards):
        assert main(extract_args(image_folder, tiny_checkpoint, shard, f"{i}/3")) == 0
    out = tmp_path / "merged.h5"
    assert main(["merge-features", "--shards", str(shards[1]), str(shards[0]), str(shards[2]), "--out", str(out)]) == 1
    assert f"{shards[1]} is shard 1/3 of rows [4, 10], not shard 0/3 from row 0" in capsys.readouterr().err
    assert main(["merge-features", "--shards", str(shards[0]), str(shards[1]), "--out", str(out)]) == 1
    assert "is shard 0/3" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("shard", ["3/3", "0/0", "0/9"])
def test_bad_shard_fails_naming_it(tmp_path, image_folder, tiny_checkpoint, shard, capsys):
    assert main(extract_args(image_folder, tiny_checkpoint, tmp_path / "s.h5", shard)) == 1
    assert f"shard {shard} of {image_folder}: need 0 <= I < S <= 8 (its batches of 2 images)" in capsys.readouterr().err
    assert not (tmp_path / "s.h5").exists() and not partial_path(tmp_path / "s.h5").exists()


@pytest.mark.slow
def test_workflow_resumes_killed_shards_and_merges_them_into_the_unsharded_store(tmp_path, monkeypatch):
    from workflow import snakemake, tiny_config, write_config

    config = tiny_config()
    config["extract"] = {"batch_size": 4, "shards": {"shapes_train": 3}}  # 72 images: 3 shards of 6 batches
    write_config(tmp_path, config)
    store = "results/features/tiny_resnet/shapes_train.h5"
    shards = [tmp_path / f"results/features/tiny_resnet/shapes_train/shard_{i}_of_3.h5" for i in range(3)]

    monkeypatch.setenv("PEEKFLOW_TEST_KILL_AFTER_BATCHES", "1")
    killed = snakemake(tmp_path, "--cores", "2", "--keep-going", store)
    assert killed.returncode != 0 and not (tmp_path / store).exists()
    assert all(partial_path(shard).exists() and not shard.exists() for shard in shards)

    monkeypatch.delenv("PEEKFLOW_TEST_KILL_AFTER_BATCHES")
    done = snakemake(tmp_path, "--cores", "2", store)
    assert done.returncode == 0, done.stderr[-3000:]
    for i in range(3):
        log = (tmp_path / f"logs/features/tiny_resnet/shapes_train/shard_{i}_of_3.log").read_text()
        assert "at row 4 (4 of 24 images done)" in log, log
    assert not any(shard.exists() or partial_path(shard).exists() for shard in shards)  # temp() shards are gone
    assert "Nothing to be done" in snakemake(tmp_path, "-n", store).stdout
    (tmp_path / store).rename(tmp_path / "merged.h5")

    config["extract"]["shards"] = {}  # the same store by one job
    write_config(tmp_path, config)
    whole = snakemake(tmp_path, "--cores", "1", store)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "extract_features" in whole.stderr and "extract_feature_shard" not in whole.stderr
    assert_same_store(tmp_path / store, tmp_path / "merged.h5", maps=False)
