"""A progress display for logs that are files: one plain line every N steps or seconds.

Rich and tqdm redraw a single terminal line; written to a file (a Slurm job's ``.out``, ``| tee``) they show nothing
useful until the end. ``trainer.progress_bar=log`` (what ``auto`` picks when stderr is not a terminal) prints, on the
global rank 0 only::

    lvu: epoch 0 step 120/1000 (12%) | 3.21 steps/s | train/loss 2.310 | elapsed 0:00:37 | ETA 0:04:34

and, for a prediction run (``lvu predict``, ``lvu eval``), batches of this rank::

    lvu: predict batch 40/225 (18%) | 0.52 batches/s | elapsed 0:01:17 | ETA 0:05:55
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks.progress import ProgressBar


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(max(0.0, seconds))))


class LogLines(ProgressBar):
    """Lightning's progress-bar slot (so Lightning adds no bar of its own), filled with plain lines."""

    def __init__(self, every_n_steps: int = 50, every_seconds: float = 60.0) -> None:
        super().__init__()
        self.every_n_steps, self.every_seconds = max(1, every_n_steps), every_seconds
        self._enabled = True
        self._start = self._last_time = 0.0
        self._first_step = self._last_step = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last_time = time.monotonic()
        self._first_step = self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step, now = trainer.global_step, time.monotonic()
        if not trainer.is_global_zero or step == self._last_step:
            return
        if step % self.every_n_steps and now - self._last_time < self.every_seconds:
            return
        self._last_step, self._last_time = step, now
        print(self.line(trainer, pl_module, step, now), file=sys.stderr, flush=True)

    def line(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, now: float) -> str:
        elapsed = now - self._start
        rate = (step - self._first_step) / elapsed if elapsed > 0 else 0.0
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if total is None:
            estimated = trainer.estimated_stepping_batches
            total = int(estimated) if estimated != float("inf") else None
        where = f"{step}/{total} ({100 * step / total:.0f}%)" if total else str(step)
        metrics = " | ".join(f"{k} {float(v):.4g}" for k, v in self.get_metrics(trainer, pl_module).items()
                             if k != "v_num" and isinstance(v, int | float))
        eta = f" | ETA {_clock((total - step) / rate)}" if total and rate > 0 else ""
        return (f"lvu: epoch {trainer.current_epoch} step {where} | {rate:.3g} steps/s"
                f"{' | ' + metrics if metrics else ''} | elapsed {_clock(elapsed)}{eta}")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last_time = time.monotonic()
        self._last_step = 0

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        done, now = batch_idx + 1, time.monotonic()
        batches = trainer.num_predict_batches
        total = int(batches[dataloader_idx]) if dataloader_idx < len(batches) and \
            batches[dataloader_idx] != float("inf") else None
        last = total is not None and done >= total
        if not trainer.is_global_zero or (done % self.every_n_steps and now - self._last_time < self.every_seconds
                                          and not last):
            return
        self._last_time = now
        elapsed = now - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        where = f"{done}/{total} ({100 * done / total:.0f}%)" if total else str(done)
        eta = f" | ETA {_clock((total - done) / rate)}" if total and rate > 0 else ""
        print(f"lvu: predict batch {where} | {rate:.3g} batches/s | elapsed {_clock(elapsed)}{eta}", file=sys.stderr,
              flush=True)
