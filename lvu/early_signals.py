"""Signals that arrive before training can act on them: noted from the first moments of ``lvu fit``.

A scheduler may send SIGUSR1 (Slurm's ``--signal=USR1@90``, ``scancel --signal=USR1``) or SIGTERM at any time,
including while the process is still importing torch and Lightning or loading the model (seconds to minutes).
SIGUSR1's default action ends the process at once: the job fails with nothing saved and no requeue. The CLI calls
:func:`note_from_now` as soon as it knows the command trains; the training's own handler
(``lvu.train.preemption.PreemptionHandler``) takes over the noted signal with :func:`take` and acts on it at the
first optimiser-step boundary (saves, stops, requeues), exactly as for a signal that arrives later.

Standard library only: this runs before anything heavy is imported.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

NOTED = (signal.SIGUSR1, signal.SIGTERM)
_first: int = 0


def _note(signum: int, frame: Any) -> None:
    global _first
    if not _first:
        _first = signum


def note_from_now() -> None:
    """Note SIGUSR1 and SIGTERM instead of dying of them (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        for signum in NOTED:
            signal.signal(signum, _note)


def take() -> int:
    """Stop noting (the default actions are back) and return the first signal noted (0: none), forgotten once
    taken. The caller installs its own handling right after, or re-delivers what it does not handle."""
    global _first
    if threading.current_thread() is threading.main_thread():
        for signum in NOTED:
            if signal.getsignal(signum) is _note:
                signal.signal(signum, signal.SIG_DFL)
    signum, _first = _first, 0
    return signum


def deliver(signum: int) -> None:
    """Act on a noted signal as if it had never been caught (its default action: SIGUSR1 and SIGTERM end the
    process)."""
    if signum:
        os.kill(os.getpid(), signum)


def release() -> None:
    """No graceful stop in this run (trainer.preemption off): back to the default actions, and a signal that came
    meanwhile takes effect now."""
    deliver(take())
