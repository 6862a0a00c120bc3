"""Shards and resumable batches: what every stage that splits its work shares -- extraction (rows of a data set),
prototypes and caricatures (render batches), DORA (batches of neurons) and patches (batches of channels).

Shards. A job's n rows (images, prototypes, neurons, channels) are made in batches of `batch_size`; shard i of S
makes the contiguous range of whole batches [B*i//S, B*(i+1)//S) (`shard_rows`), so that every row is made in the
same batch as in a one-job run and the merged shard files equal that run's output bit for bit on the CPU. A shard
file records {"index", "count", "rows": [start, stop], "of": n} under SHARD_KEY; `check_shard_files` checks a list
of them before a merge.

Resume. A job keeps each finished batch in its partial folder `<out>.partial/` (`partial_path`): one HDF5 file per
batch, written under a temporary name and renamed into place, beside `key.json`, what the batches depend on (model
weights, settings, shard: `Batches`). A job killed at any instant -- SIGKILL included -- leaves whole batch files, a
key that is whole or absent and perhaps a temporary file: its rerun with the same key (`resume_key`) continues after
the batches it finds and logs "resumed from N batches"; with another key or none it logs "started afresh because
...". An unreadable batch file is dropped, naming the file and the reason, the others kept. No finished batch is lost.
While it works, a job holds an exclusive lock (flock) on `<out>.partial/lock`: a second job on the same output
fails, naming the file and the pid that holds it, instead of mixing its batches in; the kernel releases the lock of
a killed process, so no stale lock outlives it, and the next job deletes what a killed one left half written beside
its output (`.<out>.tmp-<pid>`, io.atomic_path). A job runs inside `with BatchPlan(...) as plan:` around making and
writing its output; `plan.batches(...)` makes or reads back each batch; the folder goes once the output is written.

Tests kill jobs at named points (`kill_point`): PEEKFLOW_TEST_KILL="<point>:<n>" sends SIGKILL to the job itself the
n-th time it reaches <point> ("key": key.json half written; "batch": batch file half written; "kept": right after a
batch file was renamed into place; "final": an output written but not yet renamed, io.commit).
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import os
import shutil
import signal
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

log = logging.getLogger("peekflow")
SHARD_KEY = "shard"  # in a shard file's settings / attributes: {"index", "count", "rows": [start, stop], "of": N}
KEY_FILE, LOCK_FILE = "key.json", "lock"
_STR = h5py.string_dtype("utf-8")
_reached: dict[str, int] = {}


def kill_point(point: str) -> None:
    """Test only: die by SIGKILL the n-th time the job reaches `point` (PEEKFLOW_TEST_KILL="<point>:<n>")."""
    wanted = os.environ.get("PEEKFLOW_TEST_KILL", "")
    if not wanted.startswith(point + ":"):
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == int(wanted.rpartition(":")[2]):
        os.kill(os.getpid(), signal.SIGKILL)


def shard_rows(n: int, index: int, count: int, batch_size: int) -> tuple[int, int]:
    """Rows [start, stop) of shard `index` of `count`: batches [B*i//S, B*(i+1)//S) of the B batches of n rows."""
    batches = -(-n // batch_size)
    return batch_size * (batches * index // count), min(n, batch_size * (batches * (index + 1) // count))


def check_shard(shard: tuple[int, int], n: int, batch_size: int, what: str, unit: str = "images") -> None:
    index, count = shard
    batches = -(-n // batch_size)
    if not 0 <= index < count <= batches:
        raise ValueError(f"{what}: shard {index}/{count} needs 0 <= I < S <= {batches} (its {n} {unit} make "
                         f"{batches} batches of {batch_size})")


def shard_record(shard: tuple[int, int], n: int, batch_size: int) -> dict:
    """What a shard file records under SHARD_KEY ({} for a one-job run)."""
    index, count = shard
    if count == 1:
        return {}
    return {SHARD_KEY: {"index": index, "count": count, "rows": list(shard_rows(n, index, count, batch_size)),
                        "of": n}}


def check_shard_files(paths: list, settings: list[dict], what: str) -> dict:
    """The settings (less the shard) shared by shard files `paths`, given in shard order with their `settings`; fails
    naming the file that is not the next shard or whose settings differ from the first's, or the rows left out."""
    if not paths:
        raise ValueError(f"no {what} shard files given")
    common = {k: v for k, v in settings[0].items() if k != SHARD_KEY}
    start, shard = 0, None
    for i, (path, these) in enumerate(zip(paths, settings)):
        shard = these.get(SHARD_KEY)
        if isinstance(shard, str):
            shard = json.loads(shard)
        if shard is None:
            raise ValueError(f"{what} file {path} is not a shard (no {SHARD_KEY!r} in its settings)")
        if (shard["index"], shard["count"], shard["rows"][0]) != (i, len(paths), start):
            raise ValueError(f"{what} file {path} is shard {shard['index']}/{shard['count']} of rows "
                             f"{shard['rows']}, not shard {i}/{len(paths)} from row {start}")
        rest = {k: v for k, v in these.items() if k != SHARD_KEY}
        differ = [k for k in sorted({*rest, *common}) if not _same(rest.get(k), common.get(k))]
        if differ:
            raise ValueError(f"{what} file {path} differs from {paths[0]} in {differ}")
        start = shard["rows"][1]
    if start != shard["of"]:
        raise ValueError(f"shards {paths} cover {what} rows 0:{start} of {shard['of']}")
    return common


def _same(a, b) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b


def partial_path(out) -> Path:
    """The partial folder of output `out`: `<out>.partial`, a fixed name, so that the rerun of a killed job finds it
    (Snakemake deletes a failed job's declared outputs; this folder is not one)."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def resume_key(model, device, settings, shard: tuple[int, int] = (0, 1), **inputs) -> dict:
    """What a job's batches depend on: the model's weights, what identifies its `inputs` (named), its settings (a
    settings class or a dict), its shard and the device type. A rerun continues only if all of it is unchanged."""
    from peekflow.device import resolve_device
    from peekflow.models.checkpoint import weights_digest

    return {"model weights": weights_digest(model), **inputs,
            "settings": asdict(settings) if is_dataclass(settings) else settings, "shard": list(shard),
            "device": resolve_device(str(device)).type}


@dataclass
class BatchPlan:
    """Which batches a job makes (`shard` i of S) and where it keeps finished ones (`partial`: a folder, or None)
    for a rerun made with the same `key`; `outputs`: the job's other outputs than the partial folder's (whose
    half-written temporary files a rerun deletes). Entered (`with plan:`), it holds the folder: left without an error,
    the output is written and the folder is deleted; after an error it stays for the rerun if it keeps a batch."""

    shard: tuple[int, int] = (0, 1)
    partial: Path | None = None
    key: dict | None = None
    outputs: list = field(default_factory=list)
    kept: "Batches | None" = field(default=None, init=False, repr=False)

    def rows(self, n: int, batch_size: int, what: str, unit: str = "images") -> tuple[int, int]:
        check_shard(self.shard, n, batch_size, what, unit)
        return shard_rows(n, *self.shard, batch_size)

    def attrs(self, n: int, batch_size: int) -> dict:
        return shard_record(self.shard, n, batch_size)

    def __enter__(self) -> "BatchPlan":
        self.kept = Batches(self.partial, self.key, self.outputs)
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.kept.close(finished=kind is None or not self.kept.done())
        self.kept = None

    def batches(self, n: int, batch_size: int, what: str, make: Callable[[int, range], tuple[dict, dict]],
                unit: str = "images", describe: Callable[[dict], str] = lambda arrays: "") -> list[tuple[dict, dict]]:
        """(arrays, attributes) of each batch j of this job's shard of `n` rows, in order: read back from the partial
        folder, or made by `make(j, rows of batch j)` and kept there. `describe(arrays)` adds to the progress line."""
        first, stop = self.rows(n, batch_size, what, unit)
        kept = self.kept or Batches(self.partial, self.key)  # not entered: kept for a rerun, never deleted here
        out = []
        try:
            for j in range(first // batch_size, -(-stop // batch_size)):
                got, how = kept.get(j), "read back"
                if got is None:
                    got, how = make(j, range(j * batch_size, min((j + 1) * batch_size, n))), "made"
                    kept.put(j, *got)
                out.append(got)
                log.info("%s: batch %d/%d %s%s", what, j + 1, -(-n // batch_size), how, describe(got[0]))
        finally:
            if kept is not self.kept:
                kept.close(finished=False)
        return out


def joined(batches: list[tuple[dict, dict]]) -> dict[str, np.ndarray]:
    """The arrays of `batches` ((arrays, attributes) of each, as BatchPlan.batches gives them) joined along rows."""
    return {name: np.concatenate([arrays[name] for arrays, _ in batches]) for name in batches[0][0]}


class Batches:
    """The finished batches of a job in its partial folder (module doc); a no-op keeper without a folder. Use as a
    context manager, or call `close(finished)`: a finished job's folder is deleted, a failed one's kept."""

    def __init__(self, folder: Path | None, key: dict | None, outputs=()):
        """`key`: what the batches depend on (`resume_key`); None: nothing identifies them, so none is trusted.
        `outputs`: the job's outputs besides the folder's own (`<out>` of `<out>.partial`)."""
        self.key = None if key is None else json.loads(json.dumps(key, default=str))
        self.folder, self._lock, self.found = folder, None, 0
        if folder is None:
            return
        folder = self.folder = Path(folder)
        existed = folder.exists()
        if existed and not folder.is_dir():  # a partial file of an older peekflow
            log.info("started afresh because %s is a partial file of an older version", folder)
            folder.unlink()
            existed = False
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(folder / LOCK_FILE)
        self._remove_strays(outputs)
        why = self._why_afresh() if existed else f"{folder} did not exist (no earlier job left batches)"
        if why:
            log.info("started afresh because %s", why)
            for old in [*folder.glob("batch_*.h5"), folder / KEY_FILE]:
                old.unlink(missing_ok=True)
            self._write_key()
        else:
            for j in self.done():
                self._check(j)
            self.found = len(self.done())
            log.info("resumed from %d batches in %s", self.found, folder)

    def _remove_strays(self, outputs) -> None:
        """What a killed job left half written: a batch or key file here, its outputs beside (io.atomic_path's
        `.<out>.tmp-<pid>`). Called under the lock: no other job writes them."""
        outputs = [self.folder.with_name(self.folder.name.removesuffix(".partial")), *map(Path, outputs)]
        strays = [p for out in outputs for p in out.parent.glob(f".{glob.escape(out.name)}.tmp-*")]
        for stray in [*self.folder.glob(".*.tmp"), *strays]:
            log.info("removed %s, left half written by a killed job", stray)
            shutil.rmtree(stray) if stray.is_dir() else stray.unlink()

    def _why_afresh(self) -> str | None:
        path = self.folder / KEY_FILE
        if self.key is None:
            return "the job's inputs are not identified (no resume key), so no batch of an earlier job is trusted"
        if not path.exists():
            return f"{path} holds no key (the job was killed before writing it)"
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            return f"{path} is unreadable ({err})"
        if old != self.key:
            differ = sorted(k for k in {*old, *self.key} if old.get(k) != self.key.get(k))
            return f"{self.folder} was made with other {', '.join(differ)}"
        return None

    def _write_key(self) -> None:
        tmp = self.folder / f".{KEY_FILE}.tmp"
        text = json.dumps(self.key, sort_keys=True)
        with open(tmp, "w") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            kill_point("key")
            f.write(text[len(text) // 2:])
        os.replace(tmp, self.folder / KEY_FILE)

    def _file(self, j: int) -> Path:
        return self.folder / f"batch_{j}.h5"

    def done(self) -> list[int]:
        """The finished batches found in the folder, in order."""
        if self.folder is None:
            return []
        return sorted(int(p.stem.removeprefix("batch_")) for p in self.folder.glob("batch_*.h5"))

    def _check(self, j: int) -> None:
        """Drop batch file `j` if it cannot be read whole (logged, naming the file and why)."""
        try:
            self._attrs(j)
        except (OSError, KeyError, ValueError) as err:
            self._drop(j, err)

    def _attrs(self, j: int) -> dict:
        with h5py.File(self._file(j), "r") as h5:
            return json.loads(h5.attrs["attrs"])

    def _drop(self, j: int, err: Exception) -> None:
        log.info("dropped batch file %s: unreadable (%s)", self._file(j), err)
        self._file(j).unlink(missing_ok=True)

    def get(self, j: int) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays by name, attributes) of finished batch `j`, or None (an unreadable file is dropped, logged)."""
        if self.folder is None or not self._file(j).exists():
            return None
        try:
            with h5py.File(self._file(j), "r") as h5:
                arrays = {}
                h5.visititems(lambda name, obj: arrays.__setitem__(name, _read(obj))
                              if isinstance(obj, h5py.Dataset) else None)
                return arrays, json.loads(h5.attrs["attrs"])
        except (OSError, KeyError, ValueError) as err:
            self._drop(j, err)
            return None

    def attrs(self, j: int) -> dict:
        """The attributes of finished batch `j` (its arrays left on disk)."""
        try:
            return self._attrs(j)
        except (OSError, KeyError, ValueError) as err:
            raise RuntimeError(f"batch file {self._file(j)} is missing or unreadable ({err}): rerun the job") from None

    def put(self, j: int, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> None:
        """Keep finished batch `j`: its arrays by name ('a/b' names nest), string lists as UTF-8, and `attrs`."""
        if self.folder is None:
            return
        tmp = self.folder / f".batch_{j}.h5.tmp"
        with h5py.File(tmp, "w") as h5:
            for i, (name, values) in enumerate(arrays.items()):
                if i == 1:
                    h5.flush()
                    kill_point("batch")
                if isinstance(values, (list, tuple)) or getattr(values, "dtype", None) == object:
                    h5.create_dataset(name, data=[str(v) for v in values], dtype=_STR)
                else:
                    h5.create_dataset(name, data=values)
            h5.attrs["attrs"] = json.dumps(attrs or {}, default=str)
        os.replace(tmp, self._file(j))
        kill_point("kept")

    def close(self, finished: bool) -> None:
        """Release the lock; delete the folder once the job's output is written (`finished`), else keep it."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if finished and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Batches":
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(finished=kind is None)


def _read(dataset: h5py.Dataset):
    return dataset.asstr()[:].tolist() if dataset.dtype == _STR or dataset.dtype.kind == "O" else dataset[:]


def _lock(path: Path) -> int:
    """An exclusive flock on `path` (holding this job's pid and host), or RuntimeError naming the job that holds it.
    On a file system without flock the lock is the pid the file holds: taken over once that process is gone."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    holder = os.pread(fd, 256, 0).decode(errors="replace").strip()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        held = err.errno in (errno.EWOULDBLOCK, errno.EACCES)
        if not held and err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            os.close(fd)
            raise
        if held or _running(holder):
            os.close(fd)
            what = "a killed job holds no lock" if held else f"no flock here: delete {path} if that job is gone"
            raise RuntimeError(f"{path.parent} is in use by another job (pid {holder or 'unknown'} holds the lock "
                               f"{path}): wait for it to end or stop it; {what}") from None
        log.warning("%s: no flock on this file system; the lock is the pid it names (%s: gone)", path, holder)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} on {os.uname().nodename}\n".encode(), 0)
    return fd


def _running(holder: str) -> bool:
    """Whether the job a lock file names ("<pid> on <host>") may still run (on another host: no way to tell)."""
    pid, _, host = holder.partition(" on ")
    if not pid.isdigit():
        return False
    if host != os.uname().nodename:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
