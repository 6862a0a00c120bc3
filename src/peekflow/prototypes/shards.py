"""Sharded, resumable image synthesis: shard i of S renders a contiguous range of the batches of an unsharded run, and
a killed job continues from its last finished batch.

Batch j's images depend only on the settings and j (render_in_batches seeds its starting images from (seed, i) and its
transforms from seed + j), so shards cut between whole batches give, once merged, the images of a one-job run bit
for bit on the CPU. `BatchPlan` carries the shard and the `<out>.partial` file where each finished batch is kept
(`batches/<j>/<array>`: a prototype batch's images and losses, or whatever another stage's batch makes; attribute
`render`: the render settings), valid only for the same `key` (model weights, settings, shard);
`merge_prototype_shards` joins the shard files of one method. DORA (neurons/dora_shards.py) shards the same way.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from peekflow.features.shards import shard_rows
from peekflow.prototypes.store import Prototypes, read_prototypes

log = logging.getLogger("peekflow")
SHARD_KEY = "shard"  # in a shard file's settings: {"index", "count", "rows": [start, stop], "of": N}


def check_shard(shard: tuple[int, int], n: int, batch_size: int, what: str, unit: str = "images") -> None:
    index, count = shard
    batches = -(-n // batch_size)
    if not 0 <= index < count <= batches:
        raise ValueError(f"{what}: shard {index}/{count} needs 0 <= I < S <= {batches} (its {n} {unit} make "
                         f"{batches} batches of {batch_size})")


@dataclass
class BatchPlan:
    """Which batches a job renders (`shard` i of S) and where it keeps finished ones (`partial`, or None: nowhere)."""

    shard: tuple[int, int] = (0, 1)
    partial: Path | None = None
    key: dict | None = None

    def rows(self, n: int, batch_size: int, what: str, unit: str = "images") -> tuple[int, int]:
        check_shard(self.shard, n, batch_size, what, unit)
        return shard_rows(n, *self.shard, batch_size)

    def open(self) -> "FinishedBatches":
        return FinishedBatches(self.partial, self.key or {})

    def attrs(self, n: int, batch_size: int) -> dict:
        """What a shard file records ({} for a whole run)."""
        index, count = self.shard
        if count == 1:
            return {}
        return {SHARD_KEY: {"index": index, "count": count, "rows": list(shard_rows(n, index, count, batch_size)),
                            "of": n}}


class FinishedBatches:
    """The batches a killed job finished, in `<out>.partial`; no-op without a path."""

    def __init__(self, path: Path | None, key: dict):
        self.path, self.h5 = path, None
        self.kill_after, self.kept = int(os.environ.get("PEEKFLOW_TEST_KILL_AFTER_BATCHES", 0)), 0
        if path is None:
            return
        new = json.loads(json.dumps(key))
        if path.exists():
            try:
                h5 = h5py.File(path, "r+")
            except OSError as err:
                if "lock" in str(err).lower():
                    raise RuntimeError(f"partial file {path} is open in another process ({err})") from None
                log.info("starting afresh: partial file %s is unreadable (%s)", path, err)
                path.unlink()
            else:
                old = json.loads(h5.attrs.get("key", "{}"))
                if old == new:
                    self.h5 = h5
                    log.info("resuming from %s: %d finished batch(es)", path, len(h5.get("batches", {})))
                    return
                h5.close()
                differ = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
                log.info("starting afresh: partial file %s was made with other %s", path, ", ".join(differ))
                path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.h5 = h5py.File(path, "w")
        self.h5.attrs["key"] = json.dumps(new, sort_keys=True)

    def get(self, j: int):
        """(arrays by name, render settings) of finished batch `j`, or None."""
        if self.h5 is None or f"batches/{j}" not in self.h5:
            return None
        group = self.h5[f"batches/{j}"]
        return {name: group[name][:] for name in group}, json.loads(group.attrs["render"])

    def put(self, j: int, arrays: dict[str, np.ndarray], render: dict) -> None:
        """Keep finished batch `j`: its arrays by name (images and losses of a prototype batch; whatever a stage's
        batch makes) and the render settings it was made with."""
        if self.h5 is None:
            return
        group = self.h5.create_group(f"batches/{j}.tmp")
        for name, values in arrays.items():
            group.create_dataset(name, data=values)
        group.attrs["render"] = json.dumps(render, default=str)
        self.h5.move(f"batches/{j}.tmp", f"batches/{j}")  # a batch is there whole or not at all
        self.h5.flush()
        self.kept += 1
        if self.kept == self.kill_after:
            os._exit(137)  # test only: die like a killed job, this batch kept

    def close(self, finished: bool) -> None:
        """Close; delete the file once the job's output is written (`finished`), else keep it for the rerun."""
        if self.h5 is not None:
            self.h5.close()
            self.h5 = None
        if finished and self.path is not None and self.path.exists():
            self.path.unlink()


def check_shard_files(paths: list, settings: list[dict], what: str) -> dict:
    """The settings (less the shard) shared by shard files `paths`, given in shard order with their `settings`; fails
    naming the file that is not the next shard or whose settings differ from the first's, or the rows left out."""
    if not paths:
        raise ValueError(f"no {what} shard files given")
    common = {k: v for k, v in settings[0].items() if k != SHARD_KEY}
    start, shard = 0, None
    for i, (path, these) in enumerate(zip(paths, settings)):
        shard = these.get(SHARD_KEY)
        if shard is None:
            raise ValueError(f"{what} file {path} is not a shard (no {SHARD_KEY!r} in its settings)")
        if (shard["index"], shard["count"], shard["rows"][0]) != (i, len(paths), start):
            raise ValueError(f"{what} file {path} is shard {shard['index']}/{shard['count']} of rows "
                             f"{shard['rows']}, not shard {i}/{len(paths)} from row {start}")
        rest = {k: v for k, v in these.items() if k != SHARD_KEY}
        if rest != common:
            differ = [k for k in sorted({*rest, *common}) if rest.get(k) != common.get(k)]
            raise ValueError(f"{what} file {path} differs from {paths[0]} in {differ}")
        start = shard["rows"][1]
    if start != shard["of"]:
        raise ValueError(f"shards {paths} cover {what} rows 0:{start} of {shard['of']}")
    return common


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
