"""Graceful stops on signals: checkpoint at a step boundary on every rank, then exit (and requeue under Slurm).

Why not Lightning's own handling: its Slurm handler saves ``hpc_ckpt_N.ckpt`` from inside the signal handler, i.e.
at whatever instruction each rank happens to be running, in the middle of a backward pass or an all-reduce. Ranks
then save different steps, or deadlock in the checkpoint's collectives. Here the handler only notes the signal;
at the next optimiser-step boundary all ranks agree (one tiny all-reduce) and stop together, so the checkpoint is
the same one an uninterrupted run would have written at that step, and resuming it is exact.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lvu import early_signals
from lvu.errors import ConfigError, Preempted
from lvu.schema import PreemptionConfig
from lvu.train.rundir import slurm_job_id

log = logging.getLogger(__name__)


def parse_signal(name: str) -> signal.Signals:
    key = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
    try:
        return signal.Signals[key]
    except KeyError:
        raise ConfigError(f"trainer.preemption: unknown signal {name!r} (e.g. SIGUSR1, SIGTERM)") from None


def _training_ends_here(trainer: L.Trainer) -> bool:
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return True
    last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs - 1
    return bool(last_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


class PreemptionHandler(Callback):
    """Notes configured signals and turns them into a synchronous, checkpointed stop.

    Handlers are installed when the callback is built and again when training starts (Lightning installs its own
    SIGTERM handler in between); Lightning restores the earlier handlers at teardown.
    """

    def __init__(self, cfg: PreemptionConfig) -> None:
        self.cfg = cfg
        self.signals = [parse_signal(s) for s in cfg.signals]
        self.requeue_signal = parse_signal(cfg.requeue_signal)
        self.received: int = 0  # the signal number noted on this rank (0: none)
        self.stopped: int = 0  # the signal all ranks agreed to stop on
        self.stop_step: int = -1
        self.checkpoint: str | None = None
        self._last_step = -1
        # A signal the CLI noted before this handler existed (during imports, see lvu.early_signals) is this run's;
        # one it is not configured to handle gets its default action, as if nobody had caught it.
        early = early_signals.take()
        if early in self.signals:
            self.received = early
        else:
            early_signals.deliver(early)
        # Installed at once (the trainer is built on the main thread), so a signal that arrives while the model,
        # DeepSpeed or the checkpoint are still loading is noted too (SIGUSR1's default action would end the
        # process with nothing saved) and acted on at the first step boundary.
        self._install()

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not on the main thread: signal handlers for graceful preemption are not installed")
            return
        for signum in self.signals:
            signal.signal(signum, self._note)

    # -- signal side: async-signal-safe, only records -----------------------------------------------------------

    def _note(self, signum: int, frame: Any) -> None:
        if not self.received:
            self.received = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        self._install()  # again: Lightning installed its own SIGTERM handler in between

    # -- step side: every rank, at optimiser-step boundaries ----------------------------------------------------

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._last_step:
            return  # mid gradient accumulation: no consistent state to save
        self._last_step = trainer.global_step
        signum = self._agreed_signal(trainer)
        if not signum or _training_ends_here(trainer):
            return  # nothing to do, or the run is complete anyway: no requeue of a finished job
        self.stopped, self.stop_step = signum, trainer.global_step
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath:
            # The same save ModelCheckpoint makes on its own schedule, at the same hook: resumable mid-epoch.
            self.checkpoint = os.path.join(checkpoint.dirpath, f"{checkpoint.CHECKPOINT_NAME_LAST}"
                                                               f"{checkpoint.FILE_EXTENSION}")
            if checkpoint.save_last:
                checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))
            else:
                trainer.save_checkpoint(self.checkpoint)
        trainer.should_stop = True
        # Lightning validates when a run stops mid-epoch; a preempted job has seconds, not a validation pass, left.
        trainer.limit_val_batches = 0
        log.warning("received %s: stopping at step %d", signal.Signals(signum).name, trainer.global_step)

    def _agreed_signal(self, trainer: L.Trainer) -> int:
        """The signal any rank noted (0: none), agreed by every rank in one tiny all-reduce."""
        flag = torch.tensor([self.received], dtype=torch.int64, device=trainer.strategy.root_device)
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce(flag, reduce_op="max")
        return int(flag.item())

    # -- evaluation (lvu eval): answers are written batch by batch, so a stop needs no save ------------------------

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx,
                             dataloader_idx: int = 0) -> None:
        """After the answer writer (this callback comes after it): stop every rank at the same batch, requeue."""
        signum = self._agreed_signal(trainer)
        batches = trainer.num_predict_batches
        last = bool(batches) and batch_idx + 1 >= batches[dataloader_idx]
        if signum and not last:  # after the last batch the evaluation is complete: no requeue of a finished job
            self.stopped, self.stop_step, self.checkpoint = signum, batch_idx + 1, "the answers so far"
            log.warning("received %s: stopping after batch %d", signal.Signals(signum).name, batch_idx + 1)
            self.finish(trainer.is_global_zero)

    def finish(self, is_global_zero: bool) -> None:
        """Requeue (rank 0, under Slurm, for the requeue signal), then raise :class:`Preempted`."""
        if not self.stopped:
            return
        requeued = False
        job = slurm_job_id()
        if self.cfg.requeue and self.stopped == self.requeue_signal and job:
            requeued = True
            if is_global_zero:
                result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
                requeued = result.returncode == 0
                if not requeued:
                    log.error("scontrol requeue %s failed: %s", job, (result.stderr or result.stdout).strip())
        raise Preempted(self.stopped, self.stop_step, self.checkpoint, requeued, job)
