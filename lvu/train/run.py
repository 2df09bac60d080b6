"""Runs one stage of a recipe (fit, validate, test, predict): seed, build, train or evaluate, write results."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from omegaconf import OmegaConf

from lvu.ckpt import checkpoint_step, convert
from lvu.config import Recipe, load_recipe
from lvu.errors import PREEMPTED_EXIT, LvuError, Preempted
from lvu.schema import LOGGERS, StrategyName
from lvu.train.callbacks import LvuModelCheckpoint, RunInfo
from lvu.train.checkpointing import find_best_checkpoint, find_resume_checkpoint, remove_partials
from lvu.train.compat import check_compatible
from lvu.train.preemption import PreemptionHandler
from lvu.train.rundir import CONFIG_FILE, RUN_DIR_ENV, checkpoint_dir, resolve_run_dir
from lvu.train.runlock import LOCK_FILE, run_lock
from lvu.train.trainer import build_trainer, close_loggers

STAGES = ("fit", "validate", "test", "predict")


@dataclass
class RunResult:
    """What a stage produced: where it wrote, how far training got, the logged metrics."""

    run_dir: Path
    stage: str
    global_step: int
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: Path | None = None
    predictions: Path | None = None


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration (Lightning's launcher copies os.environ into new ranks)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def resolve_ckpt(ckpt: str | None, stage: str = "fit") -> Path | None:
    """``--ckpt`` accepts a checkpoint file, a DeepSpeed checkpoint folder, or a run directory.

    A run directory means its last checkpoint for ``fit`` (to continue it) and its best one, when a metric ranked
    them, for the other stages.
    """
    if ckpt is None:
        return None
    path = Path(ckpt)
    if not path.exists():
        raise LvuError(f"checkpoint {path} not found")
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        best = find_best_checkpoint(path)
        if stage != "fit" and best is not None:
            return best
        last = find_resume_checkpoint(path)
        if last is None:
            raise LvuError(f"run directory {path} has no checkpoints/last.ckpt")
        return last
    return path


def _consolidate_for_evaluation(folder: Path, run_dir: Path) -> Path:
    """A DeepSpeed checkpoint folder evaluated without DeepSpeed (e.g. ``lvu predict`` on one CPU or GPU): its
    shards gathered into one file in the run directory, which Lightning then loads like any checkpoint; it is
    deleted when the stage ends. Each process writes its own copy, so no rank waits on another (evaluating a
    DeepSpeed checkpoint on several processes without DeepSpeed costs one consolidation each)."""
    out = run_dir / f"consolidated-rank{os.environ.get('RANK', os.environ.get('LOCAL_RANK', '0'))}.ckpt"
    rank_zero_info(f"{folder} is a DeepSpeed checkpoint and this run does not use DeepSpeed: consolidating it into "
                   f"{out.name}")
    convert(folder, out)
    return out


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


@rank_zero_only
def write_config(recipe: Recipe, run_dir: Path) -> None:
    """Write the resolved recipe to ``config.yaml``; on resume with a changed recipe, keep the old one beside it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    text = recipe.to_yaml()
    if path.is_file():
        old = path.read_text()
        if old == text:
            return
        previous = OmegaConf.to_container(OmegaConf.create(old), resolve=False)
        changed = sorted(
            k for k, v in _flatten(recipe.to_container()).items() if _flatten(previous).get(k, object()) != v
        )
        index = 1 + sum(1 for _ in run_dir.glob("config.*.yaml"))
        path.rename(run_dir / f"config.{index}.yaml")
        rank_zero_info(f"Recipe changed since this run started ({', '.join(changed)}); old one kept as "
                       f"config.{index}.yaml")
    path.write_text(text)


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def run(recipe: Recipe, stage: str, *, ckpt: str | None = None, predictions: str | None = None,
        verbose: bool = True, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Run ``stage`` of ``recipe``.

    Args:
        ckpt: checkpoint (file, DeepSpeed folder or run directory) to resume (fit) or to evaluate (other stages).
            ``fit`` in an existing run directory resumes its last checkpoint without it.
        predictions: predict only: where to write JSON lines (default ``<run_dir>/predictions.jsonl``).
        verbose: print Lightning's metric tables and the summary.
        callbacks: added to the trainer's (``lvu eval``'s answer writer replaces the predictions writer).

    A task may stand for several runs (``TaskSpec.expand``, e.g. one probe per label task); each then runs in its
    own sub-folder and the task's summary table is printed and saved as ``summary.json``/``summary.txt``.
    """
    try:
        result = _run_recipe(recipe, stage, ckpt=ckpt, predictions=predictions, verbose=verbose, callbacks=callbacks)
    except Preempted:
        _wait_for_started_ranks()
        raise
    _wait_for_started_ranks()
    return result


def _run_recipe(recipe: Recipe, stage: str, *, ckpt: str | None, predictions: str | None,
                verbose: bool, callbacks: Sequence[Callback] = ()) -> RunResult:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    if recipe.missing_keys():
        raise LvuError(f"missing required values (???): {', '.join(recipe.missing_keys())}")
    spec = recipe.task
    subruns = spec.expand(recipe.to_object()) if spec.expand is not None else None
    if not subruns:
        return _run_one(recipe, stage, ckpt=ckpt, predictions=predictions, verbose=verbose, callbacks=callbacks)
    if callbacks:
        raise ValueError("extra callbacks are for single runs (a task of several sub-runs takes none)")

    cfg = recipe.to_object()
    run_dir = resolve_run_dir(run_dir=cfg.run_dir, runs_root=cfg.runs_root, name=recipe.name, stage=stage)
    recipe.cfg.run_dir = str(run_dir)  # the saved config.yaml resumes every sub-run when passed back to `lvu fit`
    with _env(RUN_DIR_ENV, str(run_dir)), _writer(stage, run_dir):  # ranks re-run this loop from the same folder
        write_config(recipe, run_dir)
        results = _run_subruns(recipe, stage, run_dir, subruns, ckpt, predictions, verbose, cfg.trainer.test_after_fit)
    merged = {f"{name}/{key}": value for name, r in results.items() for key, value in r.metrics.items()}
    if spec.results is not None and rank_zero_only.rank == 0 and stage in ("fit", "test"):
        spec.results(cfg, {name: r.metrics for name, r in results.items()}).write(run_dir)
    if spec.summarize is not None and rank_zero_only.rank == 0:
        table = spec.summarize(cfg, {name: r.metrics for name, r in results.items()})
        (run_dir / "summary.txt").write_text(table + "\n")
        (run_dir / "summary.json").write_text(json.dumps({n: r.metrics for n, r in results.items()}, indent=2,
                                                         sort_keys=True) + "\n")
        if verbose:
            rank_zero_info(table)
    return RunResult(run_dir=run_dir, stage=stage, global_step=max(r.global_step for r in results.values()),
                     metrics=merged)


def _run_subruns(recipe: Recipe, stage: str, run_dir: Path, subruns: list[tuple[str, list[str]]], ckpt: str | None,
                 predictions: str | None, verbose: bool, test_after_fit: bool) -> dict[str, RunResult]:
    results: dict[str, RunResult] = {}
    for name, overrides in subruns:
        sub_dir = run_dir / name
        if stage == "fit" and (sub_dir / "test_metrics.json").is_file() and test_after_fit:
            rank_zero_info(f"{name}: already trained and tested in {sub_dir}; skipping")
            metrics = json.loads((sub_dir / "test_metrics.json").read_text())
            results[name] = RunResult(sub_dir, stage, -1, metrics)
            continue
        sub_recipe = load_recipe(recipe.path, [*recipe.overrides, *overrides, f"run_dir={sub_dir}"], stage=stage)
        sub_ckpt = str(Path(ckpt) / name) if ckpt is not None and (Path(ckpt) / name).is_dir() else ckpt
        results[name] = _run_one(sub_recipe, stage, ckpt=sub_ckpt, predictions=predictions, verbose=verbose)
    return results


def _check_start(cfg: Any, stage: str) -> None:
    """What the recipe asks of this machine and this stage, before anything is built (the recipe's own values are
    checked when it loads, lvu.config.VALUE_CHECKS)."""
    monitor = cfg.trainer.checkpoint.monitor
    data = getattr(cfg, "data", None)
    if stage == "fit" and monitor and str(monitor).startswith("val/") and getattr(data, "val", "") is None:
        raise LvuError(f"trainer.checkpoint.monitor={monitor} needs validation data, but data.val is null: give "
                       f"data.val=SHARDS, or trainer.checkpoint.monitor=null to keep the last checkpoints only")
    for name in cfg.trainer.loggers:
        package = LOGGERS.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise LvuError(f"trainer.loggers lists {name}, but the {package} package is not installed: "
                           f"pip install 'lvu[{name}]'")
    accelerator = str(cfg.trainer.accelerator).lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise LvuError(f"trainer.accelerator={cfg.trainer.accelerator} but this machine has no usable CUDA GPU "
                       f"(torch.cuda.is_available() is false); use trainer.accelerator=cpu, or auto")


# The rank processes Lightning started from this one (ranks 1..N-1 under its own launcher; none under srun). They run
# the whole command, every sub-run included, so they are waited for once the command's runs are done.
_STARTED_RANKS: list[subprocess.Popen] = []


def _wait_for_started_ranks(timeout: float = 300.0) -> None:
    """Lightning never waits for the ranks it starts. Rank 0 now leaves at once (lvu.process_exit), so without this
    `lvu fit ... && lvu test ...` could start while another rank still holds its GPU, and a rank that failed at the
    very end would go unseen."""
    while _STARTED_RANKS:
        process = _STARTED_RANKS.pop()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rank_zero_warn(f"rank process {process.pid} is still running {timeout:.0f} s after this one finished")
            continue
        if code not in (0, PREEMPTED_EXIT):
            rank_zero_warn(f"rank process {process.pid} exited with code {code}")


def _writer(stage: str, run_dir: Path) -> contextlib.AbstractContextManager:
    """Training writes the run directory: one training process per folder (lvu.train.runlock)."""
    return run_lock(run_dir) if stage == "fit" else contextlib.nullcontext()


def _run_one(recipe: Recipe, stage: str, *, ckpt: str | None = None, predictions: str | None = None,
             verbose: bool = True, callbacks: Sequence[Callback] = ()) -> RunResult:
    cfg = recipe.to_object()
    named = bool(cfg.run_dir)  # given in the recipe or on the command line: every rank reads it from there
    run_dir = resolve_run_dir(run_dir=cfg.run_dir, runs_root=cfg.runs_root, name=recipe.name, stage=stage)
    recipe.cfg.run_dir = str(run_dir)  # the saved config.yaml then resumes this very run when passed back to `lvu fit`
    _check_start(cfg, stage)
    fresh = not run_dir.exists()
    try:
        with _writer(stage, run_dir):
            return _run_in(recipe, cfg, stage, run_dir, named, ckpt, predictions, verbose, callbacks)
    except Exception:
        if fresh and rank_zero_only.rank == 0:
            _remove_if_unused(run_dir)
        raise


def _remove_if_unused(run_dir: Path) -> None:
    """A start that failed leaves no folder behind, unless something was written in it (logs of a run that began)."""
    if run_dir.is_dir() and all(p.is_dir() or p.name == LOCK_FILE for p in run_dir.rglob("*")):
        shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads for one run (trainer.threads; null: leave them), restored afterwards: the count is
    process-wide, and a later run in the same process (the quickstart's, a test's) must get its own setting."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_in(recipe: Recipe, cfg: Any, stage: str, run_dir: Path, named: bool, ckpt: str | None,
            predictions: str | None, verbose: bool, callbacks: Sequence[Callback] = ()) -> RunResult:
    ckpt_path = resolve_ckpt(ckpt, stage)
    resumed_from = None
    if stage == "fit" and ckpt_path is None:
        ckpt_path = resumed_from = find_resume_checkpoint(run_dir)
        if rank_zero_only.rank == 0:
            for debris in remove_partials(checkpoint_dir(run_dir)):
                rank_zero_info(f"Removed {debris.name}, left by an interrupted save")
    if ckpt_path is not None and stage != "fit":
        rank_zero_info(f"Loading weights from {ckpt_path}")
    elif ckpt_path is not None and resumed_from is not None:
        rank_zero_info(f"Resuming from {ckpt_path} (step {checkpoint_step(ckpt_path)})")
    elif ckpt_path is not None:  # --ckpt: its whole training state, continued in this (new) run folder
        rank_zero_info(f"Continuing the training state of {ckpt_path} (step, optimiser, data position) in "
                       f"{run_dir}")
    rank_zero_info(f"Run directory: {run_dir}")

    consolidated = None
    if stage != "fit" and ckpt_path is not None and ckpt_path.is_dir() and \
            cfg.trainer.strategy.name != StrategyName.deepspeed:
        ckpt_path = consolidated = _consolidate_for_evaluation(ckpt_path, run_dir)
    predictions_path = Path(predictions) if predictions else run_dir / "predictions.jsonl"
    export = contextlib.nullcontext() if named else _env(RUN_DIR_ENV, str(run_dir))
    with export, _torch_threads(cfg.trainer.threads):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        module = recipe.task.build_module(cfg)
        if stage != "fit" and ckpt_path is None:
            source = getattr(module, "weights_source", None)
            if source:
                rank_zero_info(f"Weights from {source}")
            else:
                rank_zero_warn(f"{stage} without --ckpt: evaluating the model as the recipe builds it, without "
                               f"trained weights")
        if ckpt_path is not None:
            check_compatible(ckpt_path, recipe.task.name, recipe.to_container(), module)
        datamodule = recipe.task.build_datamodule(cfg)
        write_config(recipe, run_dir)  # only now: a refused start leaves the run's recorded recipe as it was
        run_info = RunInfo(task=recipe.task.name, recipe_name=recipe.name, config=recipe.to_container())
        task_writer = stage == "predict" and recipe.task.predict_writer is not None and not callbacks
        if task_writer:
            if predictions:
                raise LvuError(f"{recipe.task.name} writes its own outputs (see its recipe); --out does not apply")
            callbacks = [recipe.task.predict_writer(cfg)]
        trainer = build_trainer(cfg.trainer, run_dir, stage, run_info, predictions_path, callbacks)
        for callback in trainer.callbacks:
            if isinstance(callback, LvuModelCheckpoint) and ckpt_path is not None:
                callback.resuming_from = Path(ckpt_path)
        evaluate = {"verbose": verbose} if stage in ("validate", "test") else {}
        if stage == "predict":  # the writer callbacks have every prediction: none kept in memory
            evaluate = {"return_predictions": False}
        try:
            try:
                outputs = getattr(trainer, stage)(module, datamodule=datamodule, ckpt_path=ckpt_path, **evaluate)
            finally:
                if consolidated is not None:
                    consolidated.unlink(missing_ok=True)
            evaluated = stage
            for callback in trainer.callbacks:
                if isinstance(callback, PreemptionHandler):
                    callback.finish(trainer.is_global_zero)  # raises Preempted after a signal
            if stage == "fit" and cfg.trainer.test_after_fit:
                best = find_best_checkpoint(run_dir)
                rank_zero_info(f"Testing the {'best' if best else 'last'} checkpoint")
                outputs = trainer.test(module, datamodule=datamodule, ckpt_path=str(best) if best else None,
                                       verbose=verbose)
                evaluated = "test"
        except BaseException as exc:
            close_loggers(trainer, exc)
            raise
        finally:
            _STARTED_RANKS.extend(getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or [])
        close_loggers(trainer, None)

    metrics = _scalar_metrics(trainer.callback_metrics)
    if evaluated in ("validate", "test") and outputs:
        metrics = {k: v for d in outputs for k, v in _scalar_metrics(d).items()}
        if trainer.is_global_zero:
            (run_dir / f"{evaluated}_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return RunResult(
        run_dir=run_dir,
        stage=stage,
        global_step=trainer.global_step,
        metrics=metrics,
        resumed_from=resumed_from,
        predictions=predictions_path if stage == "predict" and not task_writer else None,
    )
