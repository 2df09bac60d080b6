"""Leaving a process without the interpreter's teardown.

A process that imported the training stack (torch, Lightning, transformers, DeepSpeed: about 400k objects) spends
3-7 s after its last line of work in CPython's finalisation: module dictionaries cleared one by one and several full
garbage collections over everything, none of which writes anything (measured on a 2-core machine: 3.1-7.1 s with
normal exit, 0.1 s with ``os._exit``). Every ``lvu fit`` rank pays it, and so does the loader's fork server, which
keeps the job's stdout open until it has finished (``lvu fit ... | tee log``, or a test reading the output, waits
for it).

For ``exit_now``, what finalisation does that matters runs first, in CPython's own order: non-daemon threads are
joined and ``threading``'s exit callbacks run (executor threads), then the ``atexit`` handlers (logging's flush,
loggers, multiprocessing's clean-up of its children), then stdout and stderr are flushed. Only the teardown after
that is skipped.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more can be written anyway
            pass


def exit_now(code: int) -> NoReturn:
    """Finish the process the way ``sys.exit(code)`` would, minus the interpreter's teardown.

    ``threading._shutdown`` is private, but it is exactly the first step of ``Py_FinalizeEx`` (join non-daemon
    threads, run ``threading._register_atexit`` callbacks such as concurrent.futures' executor shutdown); without it
    those threads would be cut off mid-work.
    """
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    _flush_stdio()
    os._exit(code)


def _leave_fork_server() -> None:
    _flush_stdio()
    os._exit(0)


def skip_fork_server_teardown() -> None:
    """In the loader's fork server, which ends with ``SystemExit`` inside multiprocessing when its last client is
    gone: leave at the first atexit handler. It skips the handlers registered before it, which is harmless there:
    the server runs no threads, configures no logging, and has no multiprocessing children of its own (the workers
    it forks belong to the training process, which stops them)."""
    atexit.register(_leave_fork_server)
