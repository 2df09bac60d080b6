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

import sys

import numpy  # noqa: F401  (imported once here, not in every worker)
import torch  # noqa: F401

import lvu.data.decoders
import lvu.data.loader  # noqa: F401
from lvu.data.workers import ignore_preemption_signals
from lvu.process_exit import skip_fork_server_teardown


def _in_fork_server() -> bool:
    return sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules


if _in_fork_server():
    ignore_preemption_signals()
    skip_fork_server_teardown()
