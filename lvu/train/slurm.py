"""Slurm jobs (``lvu slurm submit``): check a recipe against the job's shape, render ``slurm/train.sbatch``, submit.

Checked before anything is queued (a mistake found after hours in the queue costs hours): the recipe resolves
with its overrides (and with every ``--array`` override set), and ``trainer.devices`` / ``trainer.num_nodes`` agree
with ``--gpus-per-node`` / ``--nodes`` (Lightning's SLURMEnvironment needs one task per device).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lvu.config import load_recipe
from lvu.errors import LvuError

TEMPLATE_ENV = "LVU_SLURM_TEMPLATE"
FIELD = re.compile(r"\{\{(\w+)\}\}")


def default_template() -> Path:
    """``slurm/train.sbatch`` of the checkout, or ``$LVU_SLURM_TEMPLATE``."""
    env = os.environ.get(TEMPLATE_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "templates" / "train.sbatch"


def render(template: str, fields: dict[str, str | None]) -> str:
    """Fill ``{{name}}`` fields; a line with a field whose value is None is dropped (e.g. no ``--partition``)."""
    out = []
    for line in template.splitlines():
        names = FIELD.findall(line)
        unknown = [n for n in names if n not in fields]
        if unknown:
            raise LvuError(f"slurm template: unknown field(s) {', '.join('{{' + n + '}}' for n in unknown)}")
        if any(fields[n] is None for n in names):
            continue
        out.append(FIELD.sub(lambda m: str(fields[m.group(1)]), line))
    return "\n".join(out) + "\n"


@dataclass
class JobShape:
    nodes: int
    gpus_per_node: int
    cpus_per_task: int | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    mem: str | None = None
    job_name: str | None = None


@dataclass
class CheckedJob:
    recipe_path: Path
    recipe_name: str
    overrides: list[str]  # the user's, plus the devices/nodes this job implies
    array_sets: list[list[str]] = field(default_factory=list)
    accelerator: str = "auto"
    num_workers: int | None = None
    runs_root: str = "runs"
    command: str = "fit"  # the lvu command the job runs: fit, eval (a benchmark; resumes its answers) or predict
    # (a task with its own resumable outputs, e.g. SEAL's extraction, resumes them after a requeue; others redo it)
    ckpt: str | None = None  # --ckpt of that command (absolute)


def _shape_overrides(cfg, shape: JobShape) -> list[str]:
    """``trainer.devices``/``trainer.num_nodes`` overrides the job implies, or an error when the recipe disagrees."""
    extra = []
    devices = cfg.trainer.devices
    if isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()):
        if int(devices) != shape.gpus_per_node:
            raise LvuError(f"trainer.devices={devices} but --gpus-per-node {shape.gpus_per_node}: Slurm runs one task "
                           f"per device, so they must agree (change one of them)")
    elif devices in ("auto", "-1", -1):
        extra.append(f"trainer.devices={shape.gpus_per_node}")
    else:
        raise LvuError(f"trainer.devices={devices!r}: give a number of devices per node for a Slurm job")
    if cfg.trainer.num_nodes not in (1, shape.nodes):
        raise LvuError(f"trainer.num_nodes={cfg.trainer.num_nodes} but --nodes {shape.nodes}: make them agree")
    if cfg.trainer.num_nodes != shape.nodes:
        extra.append(f"trainer.num_nodes={shape.nodes}")
    if shape.nodes * shape.gpus_per_node > 1 and cfg.trainer.strategy.name.value == "auto":
        raise LvuError(f"{shape.nodes * shape.gpus_per_node} processes need a distributed strategy: add trainer=ddp "
                       f"or trainer=deepspeed_zero2 (or another preset in recipes/trainer/)")
    return extra


JOB_COMMANDS = ("fit", "eval", "predict")


def check_job(recipe_ref: str, overrides: list[str], shape: JobShape,
              array_sets: list[list[str]] | None = None, command: str = "fit", ckpt: str | None = None) -> CheckedJob:
    if shape.nodes < 1 or shape.gpus_per_node < 1:
        raise LvuError("--nodes and --gpus-per-node must be at least 1")
    if command not in JOB_COMMANDS:
        raise LvuError(f"--command {command}: a Slurm job runs one of {', '.join(JOB_COMMANDS)}")
    if ckpt is not None and command == "fit":
        # The job's command is rerun on every requeue: `lvu fit --ckpt X` would go back to X each time.
        raise LvuError("--ckpt is for --command eval or predict; a training job resumes its own last checkpoint "
                       "after a requeue, and starts from another run's weights with init.from=CKPT")
    if ckpt is not None and not Path(ckpt).exists():
        raise LvuError(f"--ckpt {ckpt} not found")
    stage = "fit" if command == "fit" else "predict"
    recipe = load_recipe(recipe_ref, overrides, stage=stage)
    variants = [(recipe, [])]
    for extra in array_sets or []:
        try:
            variants.append((load_recipe(recipe_ref, [*overrides, *extra], stage=stage), extra))
        except LvuError as exc:
            raise LvuError(f"--array set '{' '.join(extra)}': {exc}") from None
    for variant, extra in variants:
        missing = variant.missing_keys()
        if missing:
            where = f" (array set '{' '.join(extra)}')" if extra else ""
            raise LvuError(f"missing required values (???){where}: {', '.join(missing)}")
    cfg = recipe.to_object()
    if command == "eval" and getattr(getattr(cfg, "eval", None), "benchmark", None) is None:
        raise LvuError("--command eval needs a benchmark: add eval=NAME (presets in recipes/eval/)")
    if cfg.run_dir and command == "fit":
        raise LvuError("run_dir is set: under Slurm every job gets runs/<recipe>/slurm-<job id> (the same after a "
                       "requeue); drop run_dir, or set runs_root to move the runs")
    data = getattr(cfg, "data", None)
    return CheckedJob(
        recipe_path=recipe.path.resolve(),
        recipe_name=recipe.name,
        overrides=[*overrides, *_shape_overrides(cfg, shape)],
        array_sets=list(array_sets or []),
        accelerator=cfg.trainer.accelerator,
        num_workers=getattr(data, "num_workers", None),
        runs_root=cfg.runs_root,
        command=command,
        ckpt=str(Path(ckpt).resolve()) if ckpt else None,
    )


def read_array_file(path: Path) -> list[list[str]]:
    """One override set per line (``probe.task=genre`` or ``a=1 b=2``); blank lines and ``#`` comments skipped."""
    if not path.is_file():
        raise LvuError(f"--array file {path} not found")
    sets = [shlex.split(line, comments=True) for line in path.read_text().splitlines()]
    sets = [s for s in sets if s]
    if not sets:
        raise LvuError(f"--array file {path} has no override sets")
    for s in sets:
        bad = [a for a in s if "=" not in a]
        if bad:
            raise LvuError(f"--array file {path}: '{bad[0]}' is not key=value")
    return sets


def _array_block(sets: list[list[str]]) -> str | None:
    if not sets:
        return None
    cases = "\n".join(f"  {i}) set -- {shlex.join(s)} ;;" for i, s in enumerate(sets))
    return f'case "${{SLURM_ARRAY_TASK_ID}}" in\n{cases}\n  *) echo "no override set for array task ' \
           f'${{SLURM_ARRAY_TASK_ID}}" >&2; exit 1 ;;\nesac'


def _setup_line() -> str | None:
    if sys.prefix != sys.base_prefix:  # running from a virtual environment: the job uses the same one
        return f"source {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}"
    return None


def script_fields(job: CheckedJob, shape: JobShape, *, log_dir: Path, workdir: Path) -> dict[str, str | None]:
    on_cpu = job.accelerator == "cpu"
    cpus = shape.cpus_per_task or (job.num_workers + 1 if job.num_workers is not None else None)
    array = f"0-{len(job.array_sets) - 1}" if job.array_sets else None
    if any(c.isspace() for c in str(log_dir)):
        raise LvuError(f"--log-dir {log_dir}: Slurm's #SBATCH --output cannot take a path with spaces")
    return {
        "job_name": re.sub(r"[^A-Za-z0-9_.-]", "-", shape.job_name or job.recipe_name),
        "nodes": str(shape.nodes),
        "tasks_per_node": str(shape.gpus_per_node),
        "gres": None if on_cpu else f"gpu:{shape.gpus_per_node}",
        "cpus_per_task": str(cpus) if cpus else None,
        "mem": shape.mem,
        "time": shape.time,
        "partition": shape.partition,
        "account": shape.account,
        "array": array,
        "log_dir": str(log_dir),
        "log_file": str(log_dir / ("%x-%A_%a.out" if array else "%x-%j.out")),
        "setup": _setup_line() or "",
        "workdir": shlex.quote(str(workdir)),
        "array_overrides": _array_block(job.array_sets) or "",
        "lvu": "lvu",
        "command": job.command + (f" --ckpt {shlex.quote(job.ckpt)}" if job.ckpt else ""),
        "recipe": shlex.quote(str(job.recipe_path)),
        "overrides": shlex.join(job.overrides),
    }


def submit(script: Path) -> str:
    """``sbatch`` the script; returns the job id."""
    if shutil.which("sbatch") is None:
        raise LvuError("sbatch not found: run this on a Slurm login node (or use --dry-run to see the script)")
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise LvuError(f"sbatch refused the job: {(result.stderr or result.stdout).strip()}")
    return result.stdout.strip().split(";")[0]


@dataclass(frozen=True)
class Submitted:
    job_id: str
    script: Path
    log_dir: Path
    runs: Path  # the recipe's runs folder; each job writes runs/<recipe>/slurm-<job id>/
    name: str  # job name as given to Slurm
    array_tasks: int


def prepare_script(job: CheckedJob, shape: JobShape, template: Path, log_dir: Path, workdir: Path) -> str:
    """The rendered sbatch script."""
    if not template.is_file():
        raise LvuError(f"slurm template {template} not found (set --template or ${TEMPLATE_ENV})")
    text = template.read_text()
    if "{{command}}" not in text and (job.command != "fit" or job.ckpt):
        raise LvuError(f"slurm template {template} has no {{{{command}}}} field (it runs `lvu fit` only): use the "
                       f"current slurm/train.sbatch, or write `{{{{lvu}}}} {{{{command}}}}` in yours")
    return render(text, script_fields(job, shape, log_dir=log_dir, workdir=workdir))


def submit_job(job: CheckedJob, shape: JobShape, template: Path, log_dir: Path, workdir: Path) -> Submitted:
    """Write the rendered script into ``log_dir`` and ``sbatch`` it."""
    text = prepare_script(job, shape, template, log_dir, workdir)
    name = script_fields(job, shape, log_dir=log_dir, workdir=workdir)["job_name"] or "lvu"
    log_dir.mkdir(parents=True, exist_ok=True)
    script = log_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    script.write_text(text)
    job_id = submit(script)
    return Submitted(job_id, script, log_dir, (workdir / job.runs_root / job.recipe_name).resolve(), name,
                     len(job.array_sets))
