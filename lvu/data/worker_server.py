"""What the loader's worker fork server imports once at start (``multiprocessing`` forkserver preload).

Why a fork server: forking loader workers straight from a training process is unsafe once that process runs
threads (gloo/NCCL, DDP, queue feeders, ...): a lock held by another thread at the moment of ``fork`` stays locked
forever in the child. We saw exactly that: a worker of one DDP rank stuck before running any Python, that rank
waiting for its batch, the other rank waiting in all-reduce, forever. The fork server is a fresh single-threaded
interpreter; workers fork from it, so they start clean, and cheaply, since torch and lvu are imported here once.

The server (and every worker forked from it) ignores SIGUSR1, Slurm's early warning before preemption, which Slurm
sends to every process of the job: the training process alone decides when to stop (a checkpoint at the next step),
and the server must stay up for the loaders it may still start until then. SIGTERM keeps its default: it is also
how multiprocessing stops daemonic workers when a process exits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy  # noqa: F401  (imported once here, not in every worker)
import torch  # noqa: F401

import lvu.data.decoders
import lvu.data.loader  # noqa: F401


def ignore_preemption_signals(worker_id: int | None = None) -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process. A killed owner stays a zombie until its own parent reaps it, which may
    wait for the job's output pipes that this very worker holds open: a zombie counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): signal 0 only says whether the pid exists
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # PermissionError: the pid is another user's process now
            return False
        return True


def exit_with(owner_pid: int, interval_s: float = 1.0) -> None:
    """End this worker when the process that owns its loader is gone.

    A worker's parent is the fork server, not the training process, so PyTorch's own check (has my parent changed?)
    never fires when the training process dies abruptly (SIGKILL, the OOM killer). The worker would live on, and keep
    the server alive with it (the server waits for all its clients), holding the job's stdout and stderr open.
    """

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if not _running(owner_pid):
                os._exit(0)

    threading.Thread(target=watch, name="lvu-owner-watch", daemon=True).start()


def _in_fork_server() -> bool:
    return sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules


if _in_fork_server():
    ignore_preemption_signals()
