"""A patch search in shards: `peekflow patches --shard I/S` writes the patches of shard I of a layer's channel batches
to a shard file (patches.h5's layout, attribute `shard`: {"index", "count", "rows": [start, stop] of the selected
channels, "of": their number}, as peekflow.shards records it); `peekflow merge-patches` joins the shard files
into the patch folder of a one-job run (patches.h5's data sets and the PNGs bit for bit on the CPU).

The folder's `info` is not compared between shards: its `max_abs_diff_to_topn` (map mode) is a max over the shard's
channels, and the merge takes the max of the shards' figures, which is the one-job figure.
"""

from __future__ import annotations

import json

import numpy as np

from peekflow.io import atomic_path
from peekflow.neurons.patch_files import read_patch_h5, write_patch_h5
from peekflow.neurons.patches import Patches
from peekflow.shards import SHARD_KEY, check_shard_files

CHECK = "max_abs_diff_to_topn"


def write_patch_shard(path, p: Patches, attrs: dict) -> None:
    with atomic_path(path) as tmp:
        write_patch_h5(tmp, p, attrs)


def merge_patch_shards(paths: list) -> tuple[Patches, dict]:
    """The patches of shard files `paths` (in shard order) joined into those of a one-job run, and the folder's
    attributes; fails naming the file that is not the next shard or whose model, layer or settings differ."""
    if not paths:
        raise ValueError("merge-patches: no shard files given")
    parts = [read_patch_h5(p) for p in paths]
    settings = []
    for path, (_, attrs) in zip(paths, parts):
        if SHARD_KEY not in attrs:
            raise ValueError(f"patch file {path} is not a shard (no {SHARD_KEY!r} attribute)")
        settings.append({**{k: v for k, v in attrs.items() if k not in ("info", SHARD_KEY)},
                         SHARD_KEY: json.loads(attrs[SHARD_KEY])})
    common = check_shard_files(paths, settings, "patch")
    infos = [json.loads(attrs["info"]) for _, attrs in parts]
    info = infos[0]
    if CHECK in info:
        info[CHECK] = max(i[CHECK] for i in infos)
    fields = ("channels", "rows", "paths", "boxes", "activations", "pixels")
    joined = Patches(**{name: np.concatenate([getattr(p, name) for p, _ in parts]) for name in fields})
    return joined, {**common, "info": info}
