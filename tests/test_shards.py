"""The one shard-and-resume module (peekflow.shards): shard rows, shard-file checks, and the partial folder of
finished batches -- resumed, started afresh for a reason it logs, locked against a second job, never lost to a kill."""

import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from peekflow.shards import Batches, check_shard_files, partial_path, shard_record, shard_rows


def test_shards_cover_the_batches_in_order():
    for n, batch, count in [(10, 3, 2), (100, 7, 5), (8, 8, 1), (1000, 64, 16)]:
        rows = [shard_rows(n, i, count, batch) for i in range(count)]
        assert rows[0][0] == 0 and rows[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
        assert all(start % batch == 0 for start, _ in rows)  # shards cut between whole batches


def test_shard_file_checks_name_the_file_at_fault():
    good = [shard_record((i, 3), 10, 2)["shard"] for i in range(3)]
    settings = [{"steps": 5, "shard": s} for s in good]
    assert check_shard_files(["a", "b", "c"], settings, "prototype") == {"steps": 5}
    with pytest.raises(ValueError, match=r"prototype file b is shard 2/3 of rows \[6, 10\], not shard 1/3 from row 2"):
        check_shard_files(["a", "b", "c"], [settings[0], settings[2], settings[1]], "prototype")
    with pytest.raises(ValueError, match=r"prototype file b differs from a in \['steps'\]"):
        check_shard_files(["a", "b", "c"], [settings[0], {**settings[1], "steps": 6}, settings[2]], "prototype")
    with pytest.raises(ValueError, match=r"cover prototype rows 0:6 of 10"):
        check_shard_files(["a", "b"], [{**settings[0], "shard": {**good[0], "count": 2}},
                                       {**settings[1], "shard": {**good[1], "count": 2}}], "prototype")


def test_batches_round_trip_and_resume(tmp_path, caplog):
    folder = partial_path(tmp_path / "out.h5")
    key = {"weights": "abc", "settings": {"steps": 5}}
    arrays = {"images": np.arange(12, dtype=np.float32).reshape(3, 4), "paths": ["a/1.png", "b/ü.png", "c"],
              "features/layer4": np.ones((3, 2))}
    with pytest.raises(RuntimeError), Batches(folder, key) as batches:  # a failure keeps the folder for the rerun
        batches.put(0, arrays, {"items": 3, "skipped": []})
        batches.put(1, {"images": np.zeros((1, 4), np.float32)}, {})
        raise RuntimeError
    with caplog.at_level(logging.INFO, logger="peekflow"), Batches(folder, key) as again:
        assert again.found == 2 and again.done() == [0, 1]
        got, attrs = again.get(0)
        assert got["paths"] == arrays["paths"] and attrs == {"items": 3, "skipped": []}
        np.testing.assert_array_equal(got["images"], arrays["images"])
        np.testing.assert_array_equal(got["features/layer4"], arrays["features/layer4"])
        assert again.get(2) is None
    assert f"resumed from 2 batches in {folder}" in caplog.text
    assert not folder.exists()  # finished: the folder is gone


def test_batches_start_afresh_saying_why(tmp_path, caplog):
    folder = tmp_path / "out.h5.partial"
    key = {"weights": "abc", "steps": 5}
    with pytest.raises(KeyError), Batches(folder, key) as batches:
        batches.put(0, {"x": np.ones(2)})
        raise KeyError
    with caplog.at_level(logging.INFO, logger="peekflow"):
        Batches(folder, {**key, "steps": 6}).close(False)
    assert f"started afresh because {folder} was made with other steps" in caplog.text
    (folder / "key.json").unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="peekflow"):
        Batches(folder, key).close(False)
    assert "started afresh because" in caplog.text and "holds no key" in caplog.text
    (folder / "key.json").write_text('{"weights": "ab')  # half a key
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="peekflow"):
        b = Batches(folder, key)
        assert b.found == 0 and b.done() == []
        b.close(False)
    assert "is unreadable" in caplog.text
    folder_file = tmp_path / "old.h5.partial"  # a partial *file* of an older peekflow
    folder_file.write_bytes(b"\x89HDF" + bytes(92))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="peekflow"):
        Batches(folder_file, key).close(False)
    assert "is a partial file of an older version" in caplog.text and folder_file.is_dir()


def test_an_unreadable_batch_is_dropped_and_the_others_kept(tmp_path, caplog):
    folder = tmp_path / "p"
    with pytest.raises(ValueError), Batches(folder, {"k": 1}) as b:
        for j in range(3):
            b.put(j, {"x": np.full(4, j)})
        raise ValueError
    (folder / "batch_1.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))  # truncated like a 96-byte HDF5 file
    (folder / ".batch_3.h5.tmp").write_bytes(b"half")
    with caplog.at_level(logging.INFO, logger="peekflow"):
        b = Batches(folder, {"k": 1})
        assert not (folder / ".batch_3.h5.tmp").exists()
        assert b.get(0)[0]["x"].tolist() == [0] * 4 and b.get(1) is None and b.get(2)[0]["x"].tolist() == [2] * 4
        b.close(False)
    assert f"dropped batch file {folder / 'batch_1.h5'}: unreadable" in caplog.text


def test_a_second_job_is_refused_naming_the_holder_and_a_killed_one_holds_nothing(tmp_path):
    folder = tmp_path / "p"
    first = Batches(folder, {"k": 1})
    with pytest.raises(RuntimeError, match=rf"{folder} is in use by another job \(pid {os.getpid()} on \S+ holds the lock "):
        Batches(folder, {"k": 1})
    first.close(False)
    Batches(folder, {"k": 1}).close(False)  # released
    holder = subprocess.Popen([sys.executable, "-c", f"from peekflow.shards import Batches; import time; "
                               f"b = Batches(__import__('pathlib').Path({str(folder)!r}), {{'k': 1}}); "
                               "print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RuntimeError, match=rf"pid {holder.pid} on \S+ holds"):
        Batches(folder, {"k": 1})
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    Batches(folder, {"k": 1}).close(False)  # the kernel released the killed job's lock


KEEPER = """
import sys, numpy as np
from pathlib import Path
from peekflow.shards import Batches
with Batches(Path(sys.argv[1]), {"k": 1}) as b:
    for j in range(4):
        if b.get(j) is None:
            b.put(j, {"a": np.full(3, j), "b": np.arange(j + 1), "names": [f"row{j}"]}, {"j": j})
    print("found", b.found)
"""


@pytest.mark.parametrize("point", ["key:1", "batch:1", "batch:3", "kept:2"])
def test_a_kill_at_any_point_loses_no_finished_batch(tmp_path, point):
    """SIGKILL while the key is half written, a batch file half written, or right after a batch is kept: the rerun
    finds every batch that was kept, and ends with all four."""
    folder = tmp_path / "p"
    killed = subprocess.run([sys.executable, "-c", KEEPER, str(folder)], capture_output=True, text=True,
                            env={**os.environ, "PEEKFLOW_TEST_KILL": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    kept = {"key:1": 0, "batch:1": 0, "batch:3": 2, "kept:2": 2}[point]
    assert len(list(folder.glob("batch_*.h5"))) == kept
    rerun = subprocess.run([sys.executable, "-c", KEEPER, str(folder)], capture_output=True, text=True)
    assert rerun.returncode == 0 and rerun.stdout.split() == ["found", str(kept)], rerun.stderr
    assert not folder.exists()


def test_without_flock_the_lock_is_the_pid_it_names(tmp_path, monkeypatch, caplog):
    """A file system without flock (some NFS or Lustre mounts): a lock naming a live process refuses, one naming a
    process that is gone is taken over, saying so."""
    import errno
    import fcntl

    def no_flock(fd, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "lock").write_text(f"{os.getppid()} on {os.uname().nodename}\n")  # a live process
    with pytest.raises(RuntimeError, match=rf"pid {os.getppid()} on \S+ holds the lock .*no flock here: delete"):
        Batches(folder, {"k": 1})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / "lock").write_text(f"{dead.stdout.strip()} on {os.uname().nodename}\n")  # a process that is gone
    with caplog.at_level(logging.INFO, logger="peekflow"):
        Batches(folder, {"k": 1}).close(False)
    assert "no flock on this file system" in caplog.text
    assert (folder / "lock").read_text().startswith(f"{os.getpid()} on ")
