"""DORA's signal files: the s-AMS, representations and start responses of one shard of a layer's neurons
(`peekflow dora --shard I/S`), and their merge into the signals of a one-job run (`peekflow merge-dora`). The
layer's whole signal file (`dora_signals.h5`, written by both with --signals) gives the neuron atlas each neuron's
s-AMS.

File: datasets `neurons` [n], `images` [n * per_neuron, 3, H, W], `representations` [n, C], `start_activation` [n],
`activated` [n]; attribute `settings` (JSON): model, checkpoint, layer, the DORA settings and the shard
({"index", "count", "rows": [start, stop] of the s-AMS, "of": N}, as peekflow.shards records it).
"""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np

from peekflow.io import atomic_path
from peekflow.neurons.dora import DoraSettings, DoraSignals
from peekflow.shards import check_shard_files

FIELDS = [f.name for f in dataclasses.fields(DoraSignals)]


def write_signals(path, signals: DoraSignals, settings: dict) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for name in FIELDS:
            h5.create_dataset(name, data=getattr(signals, name), **({"compression": "gzip", "compression_opts": 4}
                                                                    if name == "images" else {}))
        h5.attrs["settings"] = json.dumps(settings, sort_keys=True)


def read_signals(path) -> tuple[DoraSignals, dict]:
    try:
        with h5py.File(path, "r") as h5:
            return DoraSignals(**{name: h5[name][:] for name in FIELDS}), json.loads(h5.attrs["settings"])
    except (OSError, KeyError) as err:
        raise ValueError(f"{path} is not a DORA signal file ({err})") from None


def merge_dora_shards(paths: list) -> tuple[DoraSignals, dict]:
    """The signals of shard files `paths` (in shard order) joined into those of a one-job run, and their shared
    settings; fails naming the file that is not the next shard or whose model, layer or settings differ."""
    if not paths:
        raise ValueError("merge-dora: no shard files given")
    parts = [read_signals(p) for p in paths]
    settings = check_shard_files(paths, [p[1] for p in parts], "DORA signal")
    joined = {name: np.concatenate([getattr(p[0], name) for p in parts]) for name in FIELDS}
    return DoraSignals(**joined), settings


def dora_settings_of(settings: dict) -> DoraSettings:
    return DoraSettings(**settings["dora"])
