"""Atomic file writes: write under a temporary name in the target folder, rename when complete.

A killed job therefore never leaves a file that looks whole, and an existing file is only replaced once its
successor is complete. What a killed job left under the temporary name (`.<name>.tmp-<pid>`) is deleted by the next
job on the same output that keeps its batches (peekflow.shards.Batches).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def temp_path(final: Path) -> Path:
    """The temporary name `final` is written under: `.<name>.tmp-<pid>` beside it."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def commit(tmp: Path, final: Path) -> None:
    """Rename the complete `tmp` to `final` (tests kill a job just before: peekflow.shards.kill_point "final")."""
    if os.environ.get("PEEKFLOW_TEST_KILL"):
        from peekflow.shards import kill_point

        kill_point("final")
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside `final`; rename it to `final` if the block succeeds, else delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
        commit(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike):
    """Yield a fresh empty folder beside `final`; if the block succeeds, it replaces `final` (an older `final` is
    removed first); in any case no temporary folder is left."""
    import shutil

    final = Path(final)
    tmp = temp_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        commit(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class IncompleteFileError(ValueError):
    """A missing, unreadable or unfinished output of an earlier stage."""


def open_complete_h5(path: str | os.PathLike, kind: str, rerun: str):
    """Open an HDF5 output for reading; fail naming the file (`kind`, e.g. "feature store") if it is missing,
    unreadable or lacks the complete=True attribute that writers set last (`rerun` says what to do about it)."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{kind} {path} does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise IncompleteFileError(f"{kind} {path} is not a readable HDF5 file ({err})") from None
    if not bool(h5.attrs.get("complete", False)):
        h5.close()
        raise IncompleteFileError(f"{kind} {path} is incomplete (no complete=True attribute): {rerun}")
    return h5


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def plain_attrs(obj, skip=()) -> dict:
    """The attributes of an HDF5 file, group or data set as h5py reads them (str, or numpy scalars) as plain Python
    values, so that they can be compared and written back as they were; keys in `skip` left out."""
    import numpy as np

    return {k: v.item() if isinstance(v, np.generic) else v for k, v in obj.attrs.items() if k not in skip}


def generated_file(path: str | os.PathLike, wanted: str, check: bool, command: str) -> int:
    """Write a generated file, or with `check` return 1 (saying which `command` regenerates it) if it differs."""
    path = Path(path)
    if check:
        if not path.exists() or path.read_text() != wanted:
            import sys

            print(f"{path} differs from the generated file: run {command}", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted)
    return 0
