"""Task registry: maps a recipe's ``task:`` name to its schema, LightningModule and LightningDataModule.

Only names registered in Python are reachable; a recipe cannot name an import path, so YAML never executes code.
A task named ``foo`` or ``foo.bar`` is registered by the module (or package) ``lvu.tasks.foo``, imported on first
use (so that ``lvu --help`` and config errors stay fast): a new method adds its task file and nothing here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvu.errors import ConfigError, did_you_mean
from lvu.schema import RecipeConfig

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.callbacks import BasePredictionWriter

    from lvu.metrics.report import Results

_REGISTRY: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


@dataclass(frozen=True)
class TaskSpec:
    """Everything the CLI needs to run a task.

    Args:
        name: the value recipes put in ``task:``, e.g. ``"lvmae.pretrain"``.
        config_class: a :class:`RecipeConfig` subclass; recipes are validated against it.
        build_module: builds the LightningModule from the validated, typed recipe.
        build_datamodule: builds the LightningDataModule from the same recipe.
        description: one line for ``lvu tasks``.
        expand: optional; recipe -> ``[(name, overrides), ...]`` when one recipe stands for several runs (e.g. a
            probe per label task). Each runs in ``<run_dir>/<name>/`` with its overrides applied.
        summarize: optional; ``{name: metrics}`` of those runs -> a table printed at the end.
        export: optional; ``(typed recipe, consolidated state dict, checkpoint entries, out folder) -> summary``
            writes a checkpoint in a form that loads outside lvu (``lvu ckpt export``).
        aliases: older names of this task; checkpoints written under them resume and export as this task.
        upgrade: optional; a config recorded by an older version (plain dict) -> the same settings in today's
            schema, so that old checkpoints still validate (``lvu ckpt export``, ``lvu fit --ckpt``).
        metrics: optional; recipe -> the names the module logs under it (``train/loss``, ``val/loss``, ...), so a
            mistyped ``trainer.checkpoint.monitor`` is refused when the recipe loads, not after the first epoch.
        results: optional; ``(recipe, {name: test metrics})`` of the sub-runs -> the :class:`Results` written as
            ``results.json`` and ``results.md`` (the format ``lvu eval`` writes), with the papers' numbers.
        predict_writer: optional; recipe -> the callback that writes ``lvu predict``'s outputs, in place of
            ``predictions.jsonl`` (e.g. SEAL's token shards); it takes the preemption handler like ``lvu eval``'s.
    """

    name: str
    config_class: type[RecipeConfig]
    build_module: Callable[[Any], L.LightningModule]
    build_datamodule: Callable[[Any], L.LightningDataModule]
    description: str = ""
    expand: Callable[[Any], list[tuple[str, list[str]]] | None] | None = None
    summarize: Callable[[Any, dict[str, dict[str, float]]], str] | None = None
    export: Callable[[Any, dict[str, Any], dict[str, Any], Path], dict[str, Any]] | None = None
    aliases: tuple[str, ...] = ()
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    metrics: Callable[[Any], frozenset[str]] | None = None
    results: Callable[[Any, dict[str, dict[str, float]]], Results] | None = None
    predict_writer: Callable[[Any], BasePredictionWriter] | None = None


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task; registering the same name twice with a different spec is a bug and raises."""
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"task '{spec.name}' is already registered")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def _task_modules() -> list[str]:
    """Modules and packages of lvu.tasks that may register tasks (a method with several stages may be a package: SEAL);
    the host-LM layer's package and the infrastructure modules register none and are skipped."""
    return [info.name for info in pkgutil.iter_modules([str(Path(__file__).parent)])
            if info.name not in ("registry", "optim", "host_lm") and not info.name.startswith("_")]


def _import_for(name: str) -> None:
    module = name.split(".", 1)[0]
    if module in _task_modules():
        importlib.import_module(f"lvu.tasks.{module}")


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name`` (or formerly called so); a :class:`ConfigError` naming close matches
    otherwise."""
    if name not in _REGISTRY and name not in _ALIASES:
        _import_for(name)
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        known = available_tasks()
        raise ConfigError(
            f"unknown task '{name}'{did_you_mean(name, known)}; known tasks: {', '.join(known) or 'none'}"
        )
    return _REGISTRY[name]


def same_task(recorded: str, name: str) -> bool:
    """Whether a checkpoint recorded as task ``recorded`` (possibly an older name) belongs to task ``name``."""
    if recorded == name:
        return True
    try:
        return get_task(recorded).name == name
    except ConfigError:
        return False


def available_tasks() -> list[str]:
    """Names of all tasks, built-in ones included."""
    for module in _task_modules():
        importlib.import_module(f"lvu.tasks.{module}")
    return sorted(_REGISTRY)
