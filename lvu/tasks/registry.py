"""Task registry: maps a recipe's ``task:`` name to its schema, LightningModule and LightningDataModule.

Only names registered in Python are reachable; a recipe cannot name an import path, so YAML never executes code.
Built-in task modules are imported on first use so that ``lvu --help`` and config errors stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvu.errors import ConfigError, did_you_mean
from lvu.schema import RecipeConfig

if TYPE_CHECKING:
    import lightning as L

# Task-name prefix -> the module that registers those tasks when imported.
_BUILTIN_TASK_MODULES: dict[str, str] = {
    "lvmae": "lvu.tasks.lvmae",
    "linvt": "lvu.tasks.linvt",
}

_REGISTRY: dict[str, TaskSpec] = {}


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
    """

    name: str
    config_class: type[RecipeConfig]
    build_module: Callable[[Any], L.LightningModule]
    build_datamodule: Callable[[Any], L.LightningDataModule]
    description: str = ""
    expand: Callable[[Any], list[tuple[str, list[str]]] | None] | None = None
    summarize: Callable[[Any, dict[str, dict[str, float]]], str] | None = None
    export: Callable[[Any, dict[str, Any], dict[str, Any], Path], dict[str, Any]] | None = None


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task; registering the same name twice with a different spec is a bug and raises."""
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"task '{spec.name}' is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _import_builtin(prefix: str) -> None:
    module = _BUILTIN_TASK_MODULES.get(prefix)
    if module is not None:
        importlib.import_module(module)


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name``; a :class:`ConfigError` naming close matches otherwise."""
    if name not in _REGISTRY:
        _import_builtin(name.split(".", 1)[0])
    if name not in _REGISTRY:
        known = available_tasks()
        raise ConfigError(
            f"unknown task '{name}'{did_you_mean(name, known)}; known tasks: {', '.join(known) or 'none'}"
        )
    return _REGISTRY[name]


def available_tasks() -> list[str]:
    """Names of all tasks, built-in ones included."""
    for prefix in _BUILTIN_TASK_MODULES:
        _import_builtin(prefix)
    return sorted(_REGISTRY)
