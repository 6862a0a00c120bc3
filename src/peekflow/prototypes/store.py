"""Prototype files: results/prototypes/<model>/<method>.h5 (DESIGN.md).

`images` [N,3,H,W] float32 in [0,1], `targets` [N] int64 (output units of the model they were made for),
`losses` [N] float32 (final per-image loss), attributes: method, model, classes (JSON), settings (JSON) and
`complete=True` written last, under a temporary name renamed when whole. The shard files of a sharded synthesis
(peekflow.shards) have the same layout and `settings["shard"]`; `merge_prototype_shards` joins them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import h5py
import numpy as np

from peekflow.io import atomic_path, open_complete_h5
from peekflow.shards import check_shard_files


@dataclass
class Prototypes:
    images: np.ndarray
    targets: np.ndarray
    losses: np.ndarray
    method: str
    model: str
    classes: list[str]
    settings: dict = field(default_factory=dict)


def write_prototypes(path, p: Prototypes) -> None:
    images = np.asarray(p.images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"prototype images must be [N,3,H,W], got {images.shape}")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"prototype images must lie in [0,1], got [{images.min():.3f}, {images.max():.3f}]")
    if not len(images) == len(p.targets) == len(p.losses):
        raise ValueError(f"{len(images)} images, {len(p.targets)} targets, {len(p.losses)} losses: must match")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("images", data=images, compression="gzip", compression_opts=4)
        h5.create_dataset("targets", data=np.asarray(p.targets, dtype=np.int64))
        h5.create_dataset("losses", data=np.asarray(p.losses, dtype=np.float32))
        h5.attrs.update(method=p.method, model=p.model, classes=json.dumps(p.classes),
                        settings=json.dumps(p.settings, sort_keys=True))
        h5.attrs["complete"] = True


def read_prototypes(path) -> Prototypes:
    with open_complete_h5(path, "prototype file", "rerun its synthesis") as h5:
        return Prototypes(
            images=h5["images"][:], targets=h5["targets"][:], losses=h5["losses"][:],
            method=str(h5.attrs["method"]), model=str(h5.attrs["model"]),
            classes=json.loads(h5.attrs["classes"]), settings=json.loads(h5.attrs["settings"]),
        )


def merge_prototype_shards(paths: list) -> Prototypes:
    """The prototypes of shard files `paths` (in shard order) joined into those of a one-job run; fails naming the
    file that is not the next shard or whose method, model, classes or settings differ from the first's."""
    if not paths:
        raise ValueError("merge-prototypes: no shard files given")
    parts = [read_prototypes(p) for p in paths]
    first = parts[0]
    for path, p in zip(paths, parts):
        if (p.method, p.model, p.classes) != (first.method, first.model, first.classes):
            raise ValueError(f"prototype file {path} differs from {paths[0]} in its method, model or classes")
    settings = check_shard_files(paths, [p.settings for p in parts], "prototype")
    return Prototypes(images=np.concatenate([p.images for p in parts]),
                      targets=np.concatenate([p.targets for p in parts]),
                      losses=np.concatenate([p.losses for p in parts]), method=first.method, model=first.model,
                      classes=first.classes, settings=settings)
