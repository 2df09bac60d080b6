"""Errors a user can cause and fix. The CLI prints them as one line (no traceback unless --debug)."""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable


class LvuError(Exception):
    """A problem with the user's input (recipe, file, checkpoint, data), not a bug in lvu."""


class ConfigError(LvuError):
    """A recipe that cannot be loaded or does not match its schema."""


def closest(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The choice most similar to ``word``, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string when nothing is close."""
    match = closest(word, choices)
    return f" (did you mean '{match}'?)" if match else ""


PREEMPTED_EXIT = 75  # EX_TEMPFAIL ("try again later"): unlike 128 + N, not what a death by signal N reports


class Preempted(LvuError):
    """A run stopped gracefully on a signal after saving a checkpoint; the CLI exits with :data:`PREEMPTED_EXIT`."""

    def __init__(self, signum: int, step: int, checkpoint: str | None, requeued: bool,
                 slurm_job: str | None = None) -> None:
        self.signum, self.step, self.checkpoint, self.requeued = signum, step, checkpoint, requeued
        where = f"saved {checkpoint}" if checkpoint else "no checkpoint callback, nothing saved"
        if requeued:
            then = "job requeued, it resumes from there"
        elif slurm_job:
            then = (f"if Slurm requeues job {slurm_job} (preemption with --requeue) it resumes from there; "
                    f"otherwise resubmit it to resume")
        else:
            then = "run the same command to resume"
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}: {where}; {then}")

    @property
    def exit_code(self) -> int:
        return PREEMPTED_EXIT
