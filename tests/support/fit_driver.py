"""``lvu`` as a script, with two test hooks, for multi-process runs (Lightning re-runs this file for every rank).

    python fit_driver.py fit RECIPE k=v ...        same as ``lvu fit RECIPE k=v ...``

* ``LVU_TEST_SIGNAL=SIGUSR1:7``: rank 0 sends itself SIGUSR1 when optimiser step 7 ends, the way a scheduler's
  signal arrives at an arbitrary moment on one process (graceful stop, exact resume).
* ``LVU_TEST_KILL_IN_SAVE=3``: the 3rd checkpoint save of the run writes part of its data and then the process
  SIGKILLs itself (atomic saving). With several ranks, rank 0 does it and SIGKILLs its whole process group (every
  rank, as a node failure would): start the run in a session of its own.
* ``LVU_TEST_PARAMETERS_AT_START=FILE``: when training starts (after any restore), rank 0 saves the module's
  parameters (ZeRO-3 partitions gathered) to FILE, so a test can compare what a resumed run loaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import lightning as L
import torch

import lvu.train.trainer as trainer_assembly
from lvu.cli import script_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, wherever this is started from (srun too)
import support.tiny_task  # noqa: F401  (registers the test-only task test.tiny)


class SignalAtStep(L.Callback):
    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:
            os.kill(os.getpid(), self.signum)


def _install_signal_hook(spec: str) -> None:
    name, step = spec.split(":")
    build = trainer_assembly.build_callbacks

    def build_with_signal(*args, **kwargs):
        # Registered first, so the signal is pending when PreemptionHandler looks at this very step boundary.
        return [SignalAtStep(signal.Signals[name], int(step)), *build(*args, **kwargs)]

    trainer_assembly.build_callbacks = build_with_signal


class ParametersAtStart(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        params = dict(pl_module.named_parameters())
        gather = contextlib.nullcontext()
        if any(hasattr(p, "ds_id") for p in params.values()):  # ZeRO-3: every rank takes part in the gather
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(list(params.values()))
        with gather:
            state = {name: p.detach().float().clone() for name, p in params.items()}
        if trainer.global_rank == 0:
            torch.save(state, self.path)


def _add_callback(callback: L.Callback) -> None:
    build = trainer_assembly.build_callbacks
    trainer_assembly.build_callbacks = lambda *args, **kwargs: [*build(*args, **kwargs), callback]


def _install_kill_hook(nth: int) -> None:
    """Make the nth ``torch.save`` into a checkpoint write half its bytes, then SIGKILL the process."""
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and ("global_step" in obj or "module" in obj) and os.environ.get("RANK", "0") == "0":
            calls["n"] += 1  # Lightning's or DeepSpeed's; counted on rank 0 (the one that kills)
            if calls["n"] == nth:
                import io

                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                handle = open(f, "wb") if isinstance(f, str | os.PathLike) else f  # noqa: SIM115
                handle.write(data[: len(data) // 2])
                handle.flush()
                if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                    os.killpg(os.getpgid(0), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


if __name__ == "__main__":
    if os.environ.get("LVU_TEST_SIGNAL"):
        _install_signal_hook(os.environ["LVU_TEST_SIGNAL"])
    if os.environ.get("LVU_TEST_KILL_IN_SAVE"):
        _install_kill_hook(int(os.environ["LVU_TEST_KILL_IN_SAVE"]))
    if os.environ.get("LVU_TEST_PARAMETERS_AT_START"):
        _add_callback(ParametersAtStart(os.environ["LVU_TEST_PARAMETERS_AT_START"]))
    script_main()
