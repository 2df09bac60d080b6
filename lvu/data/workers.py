"""How loader workers live and end: they ignore Slurm's early-warning signal and exit when their training process is
gone (see lvu.data.worker_server for why they start from a fork server)."""

from __future__ import annotations

import os
import signal
import threading
import time


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
