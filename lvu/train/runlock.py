"""One writer per run directory: ``lvu fit`` holds an exclusive lock on ``<run_dir>/.lvu.lock`` while it runs.

Without it, two runs started on the same ``run_dir`` (a command run twice, a job submitted twice) both exit 0 with
their checkpoints and ``config.yaml`` interleaved, and a resume continues one run's weights under the other's recipe.

* The lock is an OS file lock (``fcntl.flock``) on an open file: the kernel drops it when the holding process dies,
  however it dies (SIGKILL, node reboot aside), so there are no stale locks to clean up, and a Slurm requeue takes
  the lock as soon as the killed job's process is gone. The file itself stays and says who held it last.
* Only the first process of a run takes it (global rank 0, or a process that is not a launched rank): the other
  ranks of the same run are started by it (Lightning's launcher, ``srun``) and write where it tells them.
* Inside one process the lock is re-entrant per folder (a task of several sub-runs locks its folder, then each
  sub-run's own), and released when the run returns, so a script may fit the same run twice in a row.

``fcntl`` locks are advisory and local to what the file system supports: on NFS they work through the NFS lock
manager (``lockd``), on some FUSE mounts not at all (then the lock is a no-op; nothing else breaks).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lvu.errors import LvuError

LOCK_FILE = ".lvu.lock"
_held: dict[Path, tuple[IO[str], int]] = {}  # folder -> (open lock file, nesting depth) in this process


def _first_process_of_run() -> bool:
    """Rank 0 of a launched run, or a process no launcher started (its ranks are started by it later)."""
    return all(os.environ.get(name) in (None, "", "0") for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


def _holder() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
    except ValueError:
        return "another process"
    job = f", Slurm job {info['slurm_job']}" if info.get("slurm_job") else ""
    return f"process {info.get('pid')} on {info.get('host')}{job}, since {info.get('since')}"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock for the duration (see the module docstring); raise LvuError naming the holder
    when another process holds it."""
    folder = run_dir.resolve()
    if not _first_process_of_run():
        yield
        return
    if folder in _held:
        handle, depth = _held[folder]
        _held[folder] = (handle, depth + 1)
        try:
            yield
        finally:
            _release(folder)
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the run, closed by _release
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _describe(handle.read())
        handle.close()
        raise LvuError(f"run directory {run_dir} is in use by {holder}: two runs writing one folder would mix "
                       f"their checkpoints. Wait for it to end (or stop it), or give this run another run_dir"
                       ) from None
    except OSError:
        pass  # a file system without locks: run unprotected rather than not at all
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(_holder()) + "\n")
    handle.flush()
    _held[folder] = (handle, 1)
    try:
        yield
    finally:
        _release(folder)


def _release(folder: Path) -> None:
    handle, depth = _held[folder]
    if depth > 1:
        _held[folder] = (handle, depth - 1)
        return
    del _held[folder]
    handle.close()  # closing the file drops the lock
