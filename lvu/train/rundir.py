"""Where a run writes, and which checkpoint a run directory resumes from.

Layout: ``<runs_root>/<name>/<version>/`` holding ``config.yaml`` (the resolved recipe), ``checkpoints/`` and
``logs/``. ``version`` is ``version_N`` for ``fit`` and ``<stage>_N`` for validate/test/predict, so evaluations never
overwrite a training run's logs. Every rank of a job must agree on the folder, so it is fixed once and passed on:

* ``run_dir=`` in the recipe (or on the command line) wins;
* else ``$LVU_RUN_DIR``, which the launching process sets before Lightning starts the other ranks;
* else, inside a Slurm batch job, ``slurm-<job id>``: all ranks start at once and agree without talking, and a
  requeued job (same id) lands in the same folder and resumes;
* else the next free ``version_N`` (only rank 0 may choose: other ranks would race it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lvu.errors import LvuError

RUN_DIR_ENV = "LVU_RUN_DIR"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


def slurm_job_id() -> str | None:
    """This Slurm job's id as ``scontrol`` takes it: ``<array job>_<task>`` for array tasks, else the job id."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")


def _slurm_version() -> str | None:
    # Interactive allocations (salloc/srun --pty) run many unrelated commands under one id: not a run identity.
    if not os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_JOB_NAME") in {"bash", "interactive", "zsh", "sh"}:
        return None
    return f"slurm-{slurm_job_id()}"


def global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _next_version(parent: Path, prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)$")
    taken = [int(m.group(1)) for p in parent.glob(f"{prefix}_*") if (m := pattern.match(p.name))]
    return max(taken, default=-1) + 1


def resolve_run_dir(*, run_dir: str | None, runs_root: str, name: str, stage: str) -> Path:
    """The folder this invocation writes to (see the module docstring for the rules)."""
    if run_dir:
        return Path(run_dir)
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    parent = Path(runs_root) / name
    slurm = _slurm_version()
    if slurm:
        return parent / (slurm if stage == "fit" else f"{slurm}-{stage}")
    if global_rank() != 0:
        raise LvuError(
            "this process is not rank 0 and no run directory was fixed for it; launch through `lvu`, Slurm, "
            "or pass run_dir=... so that every rank writes to the same folder"
        )
    prefix = "version" if stage == "fit" else stage
    return parent / f"{prefix}_{_next_version(parent, prefix)}"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR
