"""Recipe loading: YAML -> OmegaConf, ``defaults:`` includes, command-line overrides, typed validation.

A recipe is one YAML file. Its optional ``defaults:`` list names other files merged *under* it, in order:

* ``- lvmae/base`` (a string): that YAML file merged at the root. Looked up next to the including file first,
  then under the recipes folder; the ``.yaml`` suffix is optional.
* ``- trainer: cpu`` (a one-key mapping): a preset from the ``trainer/`` folder merged into the ``trainer`` section.
  The same choice can be changed on the command line with ``trainer=ddp``.

Command-line overrides are OmegaConf dotlists (``trainer.max_steps=10 data.batch_size=4``) applied last. The result
is validated against the task's schema (a dataclass) and its ``${...}`` interpolations resolved. Every problem is
raised as a one-line :class:`~lvu.errors.ConfigError` before anything is computed.

Every schema field is described by the string literal that follows it (an attribute docstring, as litgpt's configs
have); :func:`explain` prints them next to the resolved values (``lvu config RECIPE --explain``). Recipe keys that
are Python keywords (``init.from``) are fields with a trailing underscore (``from_``) in the dataclasses, which
cannot name a field ``from``; recipes, overrides, messages and saved configs use the plain name.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import inspect
import itertools
import json
import keyword
import os
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf import errors as oc_errors

from lvu.errors import ConfigError, closest, did_you_mean
from lvu.schema import LOGGERS, PRESET_GROUPS, RecipeConfig, renamed, schema_name, user_dotted, user_keys, user_name
from lvu.tasks.registry import TaskSpec, get_task

RECIPE_SUFFIX = ".yaml"


def recipes_dir() -> Path:
    """The folder of built-in recipes, or ``$LVU_RECIPES`` when set. They ship inside the package (``lvu/recipes``,
    package data, so an installed wheel has them); ``recipes/`` at the top of a checkout links there."""
    env = os.environ.get("LVU_RECIPES")
    return Path(env) if env else Path(__file__).resolve().parent / "recipes"


@dataclass(frozen=True)
class Recipe:
    """A validated, fully resolved recipe.

    Args:
        name: run name (``name:`` in the recipe, else its path under recipes/ without suffix).
        path: the YAML file it came from.
        cfg: the resolved config, typed by the task's schema.
        task: the task it names.
        overrides: the command-line overrides that were applied.
    """

    name: str
    path: Path
    cfg: DictConfig
    task: TaskSpec
    overrides: tuple[str, ...] = ()

    def to_object(self) -> Any:
        """The config as instances of the task's dataclasses (enums as Enum members)."""
        return OmegaConf.to_object(self.cfg)

    def to_container(self) -> dict[str, Any]:
        """Plain dicts/lists/scalars (enums as strings): for checkpoints and JSON."""
        return user_keys(OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True))

    def to_yaml(self) -> str:
        plain = user_keys(OmegaConf.to_container(self.cfg, resolve=False, enum_to_str=True))
        return OmegaConf.to_yaml(OmegaConf.create(plain))

    def missing_keys(self) -> list[str]:
        return sorted(user_dotted(key) for key in OmegaConf.missing_keys(self.cfg))


def _schema_keys(raw: DictConfig) -> DictConfig:
    """Recipe keys that are Python keywords renamed to their schema fields (``from`` -> ``from_``)."""
    plain = OmegaConf.to_container(raw, resolve=False)
    if not any(keyword.iskeyword(key) for key in _all_keys(plain)):
        return raw
    return OmegaConf.create(renamed(plain, schema_name))


def _all_keys(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield str(key)
            yield from _all_keys(value)


def available_recipes() -> list[str]:
    """Names of the built-in recipes (files under recipes/ that name a task), e.g. ``lvmae/pretrain``."""
    root = recipes_dir()
    names = []
    for path in sorted(root.rglob(f"*{RECIPE_SUFFIX}")):
        rel = path.relative_to(root)
        if rel.parts[0] in PRESET_GROUPS:
            continue
        names.append(rel.with_suffix("").as_posix())
    return names


def find_recipe(ref: str | Path) -> Path:
    """Resolve a recipe given as a file path or as a name under recipes/ (``lvmae/pretrain``)."""
    path = Path(ref)
    candidates = [path, recipes_dir() / path, recipes_dir() / f"{ref}{RECIPE_SUFFIX}"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    hint = did_you_mean(str(ref).removesuffix(RECIPE_SUFFIX), available_recipes())
    raise ConfigError(
        f"recipe '{ref}' not found: no such file, and no {recipes_dir() / ref}[.yaml]{hint}; "
        f"`lvu recipes` lists the built-in ones"
    )


# Required values only training reads: `lvu validate/test/predict` leave them unset (None) instead of asking for
# them (a predict run needs no training shards, nor the stage-1 checkpoint a stage-2 fit starts from).
TRAINING_ONLY_KEYS = ("data.train",)
TRAINING_ONLY_SECTIONS = ("init.",)
# Data splits a stage never reads: a required (???) one may stay unset for that stage (`lvu test` needs data.test).
UNUSED_SPLITS = {
    "fit": (),
    "validate": ("data.train", "data.test", "data.predict"),
    "test": ("data.train", "data.val", "data.predict"),
    "predict": ("data.train", "data.val", "data.test"),
}


def load_recipe(ref: str | Path, overrides: Sequence[str] = (), *, allow_missing: bool = False,
                stage: str = "fit") -> Recipe:
    """Load, compose, override, validate and resolve a recipe.

    Args:
        ref: recipe file path or built-in recipe name.
        overrides: ``key=value`` dotlist entries; ``group=preset`` swaps a preset (e.g. ``trainer=ddp``).
        allow_missing: keep ``???`` values instead of raising (``lvu config`` shows them; runs need them filled).
        stage: the stage the recipe is for; other stages than ``fit`` do not require :data:`TRAINING_ONLY_KEYS`,
            :data:`TRAINING_ONLY_SECTIONS` and the data splits they do not read (:data:`UNUSED_SPLITS`).
    """
    path = find_recipe(ref)
    group_choices, dotlist = _split_overrides(overrides)
    raw = _compose(path, group_choices, top_level=True)
    raw = OmegaConf.merge(raw, _parse_dotlist(dotlist))

    task_name = raw.get("task")
    if task_name is None or OmegaConf.is_missing(raw, "task"):
        raise ConfigError(f"{path}: no 'task:' given; add e.g. 'task: lvmae.pretrain' (`lvu tasks` lists them)")
    if not isinstance(task_name, str):
        raise ConfigError(f"task: expected a task name (str), got {type(task_name).__name__} {task_name!r}")
    spec = get_task(task_name)

    cfg = validate(raw, spec.config_class)
    if not cfg.name:
        cfg.name = _default_name(path)
    if stage != "fit":
        for key in OmegaConf.missing_keys(cfg):
            if key in TRAINING_ONLY_KEYS or key in UNUSED_SPLITS.get(stage, ()) or \
                    key.startswith(TRAINING_ONLY_SECTIONS):
                OmegaConf.update(cfg, key, None, merge=False)
    if not allow_missing:
        _check_complete(cfg)
    _resolve(cfg, allow_missing=allow_missing)
    _check_values(cfg)
    _check_monitor(cfg, spec)
    return Recipe(name=cfg.name, path=path, cfg=cfg, task=spec, overrides=tuple(overrides))


def _positive(value: Any) -> bool:
    return value is None or value > 0


# Values whose type is right but which no run can use, checked when a recipe loads (``lvu config``, every command):
# a mistake costs a second, not the start-up of a job. (key, acceptable, what to say).
VALUE_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("data.batch_size", _positive, "must be positive"),
    ("data.eval_batch_size", _positive, "must be positive (or null: data.batch_size)"),
    ("data.num_workers", lambda v: v is None or v >= 0, "must be 0 (load in the training process) or more"),
    ("data.prefetch_factor", _positive, "must be positive"),
    ("data.eval_frames", _positive, "must be positive"),
    ("data.sampler.num_frames", _positive, "must be positive"),
    ("trainer.devices", lambda v: v not in (0, "0", []), "0 devices: give a count, a list of device ids, or auto"),
    ("trainer.num_nodes", _positive, "must be positive"),
    ("trainer.accumulate_grad_batches", _positive, "must be positive"),
    ("trainer.threads", _positive, "must be positive (or null: torch's default, one per core)"),
)


def _check_values(cfg: DictConfig) -> None:
    """One ConfigError listing every value of :data:`VALUE_CHECKS` (and related pairs) that cannot work."""
    problems = []
    for key, acceptable, why in VALUE_CHECKS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if OmegaConf.is_config(value) or value == "???":
            continue
        try:
            ok = acceptable(value)
        except TypeError:
            ok = True  # another type (e.g. devices as a string such as "auto"): the schema allows it
        if not ok:
            problems.append(f"{key}={value!r} {why}")
    low = OmegaConf.select(cfg, "data.sampler.min_frames", default=None, throw_on_missing=False)
    high = OmegaConf.select(cfg, "data.sampler.max_frames", default=None, throw_on_missing=False)
    if isinstance(low, int) and isinstance(high, int) and low > high:
        problems.append(f"data.sampler.min_frames={low} exceeds data.sampler.max_frames={high}")
    loggers = OmegaConf.select(cfg, "trainer.loggers", default=None, throw_on_missing=False)
    unknown = sorted(set(loggers or ()) - set(LOGGERS)) if OmegaConf.is_list(loggers) else []
    if unknown:
        problems.append(f"trainer.loggers: unknown logger(s) {', '.join(unknown)} (choose from "
                        f"{', '.join(LOGGERS)})")
    if problems:
        raise ConfigError("recipe values that cannot work: " + "; ".join(problems))


def _check_monitor(cfg: DictConfig, spec: TaskSpec) -> None:
    """A ``trainer.checkpoint.monitor`` that the task never logs fails at the first validation, after an epoch of
    compute, with nothing saved: refuse it when the recipe loads."""
    monitor = OmegaConf.select(cfg, "trainer.checkpoint.monitor", default=None, throw_on_missing=False)
    if not isinstance(monitor, str) or monitor == "???" or spec.metrics is None:
        return
    try:
        logged = spec.metrics(cfg)
    except oc_errors.MissingMandatoryValue:  # `lvu config` of an unfinished recipe: checked once it is complete
        return
    if monitor not in logged | {"step", "epoch"}:  # Lightning offers these two to every run
        raise ConfigError(f"trainer.checkpoint.monitor={monitor!r} is not a metric of task {spec.name}"
                          f"{did_you_mean(monitor, logged)}; under this recipe it logs: {', '.join(sorted(logged))}")


def _leaf_keys(config: DictConfig, wanted: Callable[[Any], bool]) -> list[str]:
    """Dotted keys of the unresolved leaf values for which ``wanted(value)`` holds (nothing is interpolated)."""

    def walk(tree: Any, prefix: str) -> list[str]:
        if isinstance(tree, dict):
            return [k for key, value in tree.items() for k in walk(value, f"{prefix}{key}.")]
        return [prefix.rstrip(".")] if wanted(tree) else []

    return walk(OmegaConf.to_container(config, resolve=False), "")


def validate(raw: DictConfig, schema: type) -> DictConfig:
    """Merge ``raw`` onto the structured schema, turning OmegaConf's errors into one-line ConfigErrors."""
    raw = _schema_keys(raw)
    _check_sections(raw, schema, prefix="")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), raw)
        # OmegaConf's merge never lets ``???`` replace a value, so a recipe's ``train: ???`` would silently keep the
        # schema's default (None). A recipe that marks a value required means it.
        for key in _leaf_keys(raw, lambda value: value == "???"):
            OmegaConf.update(cfg, key, "???", merge=False)
        return cfg  # type: ignore[return-value]
    except oc_errors.ConfigKeyError as exc:
        raise _unknown_key_error(exc, schema) from None
    except oc_errors.ValidationError as exc:
        raise _type_error(exc, schema) from None


# ----------------------------------------------------------------------------------------------------------------
# Composition


def _default_name(path: Path) -> str:
    try:
        return path.resolve().relative_to(recipes_dir().resolve()).with_suffix("").as_posix()
    except ValueError:
        return path.stem


def _load_yaml(path: Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    if loaded is None:
        return OmegaConf.create({})
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, not a {type(loaded).__name__}")
    return loaded


def _split_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Separate preset choices (``trainer=ddp``) from dotlist overrides (``trainer.max_steps=10``)."""
    group_choices: dict[str, str] = {}
    dotlist: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. trainer.max_steps=10)")
        if key in PRESET_GROUPS and value and not value.lstrip().startswith(("{", "[")):
            group_choices[key] = value.strip()
        else:
            dotlist.append(item)
    return group_choices, dotlist


def _parse_dotlist(dotlist: list[str]) -> DictConfig:
    try:
        return OmegaConf.from_dotlist(dotlist)
    except Exception as exc:  # OmegaConf raises several types for malformed values
        raise ConfigError(f"cannot parse overrides {' '.join(dotlist)}: {str(exc).splitlines()[0]}") from None


def _find_include(name: str, including: Path) -> Path:
    rel = name if name.endswith(RECIPE_SUFFIX) else f"{name}{RECIPE_SUFFIX}"
    for base in (including.parent, recipes_dir()):
        candidate = base / rel
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{including}: defaults entry '{name}' not found "
        f"(looked for {including.parent / rel} and {recipes_dir() / rel})"
    )


def _find_preset(group: str, choice: str, including: Path) -> Path:
    for base in (including.parent, recipes_dir()):
        candidate = base / group / f"{choice}{RECIPE_SUFFIX}"
        if candidate.is_file():
            return candidate
    presets = sorted(p.stem for p in (recipes_dir() / group).glob(f"*{RECIPE_SUFFIX}"))
    raise ConfigError(
        f"{group} preset '{choice}' not found{did_you_mean(choice, presets)}; choose one of: {', '.join(presets)}"
    )


def _compose(path: Path, group_choices: dict[str, str], *, top_level: bool, stack: tuple[Path, ...] = ()) -> DictConfig:
    """Load ``path`` with its ``defaults:`` merged under it (recursively)."""
    if path.resolve() in stack:
        chain = " -> ".join(str(p) for p in (*stack, path.resolve()))
        raise ConfigError(f"defaults form a cycle: {chain}")
    stack = (*stack, path.resolve())
    own = _load_yaml(path)
    defaults = own.pop("defaults", None)
    if defaults is None:
        defaults = OmegaConf.create([])
    if not OmegaConf.is_list(defaults):
        raise ConfigError(f"{path}: 'defaults' must be a list, e.g. [{{trainer: cpu}}, lvmae/base]")

    merged = OmegaConf.create({})
    used_groups: set[str] = set()
    for entry in defaults:
        if isinstance(entry, str):
            merged = OmegaConf.merge(merged, _compose(_find_include(entry, path), group_choices, top_level=False,
                                                      stack=stack))
        elif OmegaConf.is_dict(entry) and len(entry) == 1:
            group, choice = next(iter(entry.items()))
            if group not in PRESET_GROUPS:
                raise ConfigError(
                    f"{path}: unknown preset group '{group}' in defaults{did_you_mean(group, PRESET_GROUPS)}; "
                    f"groups: {', '.join(PRESET_GROUPS)}"
                )
            used_groups.add(group)
            choice = group_choices.get(group, choice)
            if choice is None:
                continue
            preset = _compose(_find_preset(group, str(choice), path), {}, top_level=False, stack=stack)
            merged = OmegaConf.merge(merged, {group: preset})
        else:
            raise ConfigError(f"{path}: bad defaults entry {entry!r}; use 'path/to/file' or '{{group: preset}}'")

    if top_level:
        # A preset chosen on the command line for a group the recipe did not list is added under the recipe.
        for group, choice in group_choices.items():
            if group not in used_groups:
                preset = _compose(_find_preset(group, choice, path), {}, top_level=False, stack=stack)
                merged = OmegaConf.merge(merged, {group: preset})
    return OmegaConf.merge(merged, own)  # type: ignore[return-value]


@contextlib.contextmanager
def _interpolation_errors() -> Iterator[None]:
    """Turn OmegaConf's interpolation failures into one-line ConfigErrors naming the key."""
    try:
        yield
    except oc_errors.MissingMandatoryValue as exc:
        raise ConfigError(f"{exc.full_key}: refers to a missing required value (???)") from None
    except oc_errors.InterpolationKeyError as exc:
        raise ConfigError(f"{exc.full_key}: interpolation refers to an unknown key ({_first_line(exc)})") from None
    except oc_errors.InterpolationResolutionError as exc:
        raise ConfigError(f"{exc.full_key}: cannot resolve interpolation: {_first_line(exc)}") from None
    except oc_errors.ValidationError as exc:
        raise ConfigError(f"{exc.full_key}: interpolated value has the wrong type: {_first_line(exc)}") from None


def _check_complete(cfg: DictConfig) -> None:
    with _interpolation_errors():
        missing = sorted(user_dotted(key) for key in OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"missing required value{'s' if len(missing) > 1 else ''} (???): {', '.join(missing)}; "
            f"set {'them' if len(missing) > 1 else 'it'} in the recipe or on the command line, e.g. {missing[0]}=..."
        )


def _resolve(cfg: DictConfig, *, allow_missing: bool) -> None:
    """Resolve ``${...}`` in place; with ``allow_missing``, interpolations of ``???`` values stay unresolved."""
    if allow_missing:
        # One value at a time: OmegaConf.resolve stops at the first interpolation of a ``???``.
        for key in _leaf_keys(cfg, lambda value: isinstance(value, str) and "${" in value):
            try:
                value = OmegaConf.select(cfg, key, throw_on_missing=True)
            except (oc_errors.MissingMandatoryValue, oc_errors.InterpolationResolutionError) as exc:
                if "issing mandatory value" in str(exc):
                    continue
                with _interpolation_errors():
                    raise
            OmegaConf.update(cfg, key, value, merge=False)
        return
    with _interpolation_errors():
        OmegaConf.resolve(cfg)


# ----------------------------------------------------------------------------------------------------------------
# Schema introspection for error messages


def _first_line(exc: Exception) -> str:
    msg = getattr(exc, "msg", None) or str(exc)
    return msg.splitlines()[0] if msg else type(exc).__name__


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_type(schema: type, dotted: str) -> Any:
    """The annotated type at ``a.b.c`` inside nested dataclasses, or None if the path leaves the schema."""
    current: Any = schema
    for part in dotted.split("."):
        if not (isinstance(current, type) and dataclasses.is_dataclass(current)):
            return None
        hints = _hints(current)
        if part not in hints:
            return None
        current = hints[part]
    return current


def _describe_type(tp: Any) -> str:
    """A user-facing name: ``int``, ``float or null``, ``one of adamw, adam, sgd``, ``list of float``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        names = [_describe_type(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return f"{text} or null" if type(None) in args else text
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        return f"list of {_describe_type(inner)}"
    if origin is dict:
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(m.name for m in tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def _valid_keys(schema: type, parent: str) -> list[str]:
    node = _field_type(schema, parent) if parent else schema
    if isinstance(node, type) and dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node)]
    return []


def _check_sections(raw: Any, schema: type, prefix: str) -> None:
    """Fail clearly where a mapping is expected but a scalar was given (OmegaConf's message names no key)."""
    if not OmegaConf.is_dict(raw):
        return
    hints = _hints(schema)
    for key in raw:
        tp = hints.get(str(key))
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            continue
        full = f"{prefix}{key}"
        if OmegaConf.is_missing(raw, key):
            continue
        value = raw[key]
        if value is not None and not OmegaConf.is_dict(value):
            raise ConfigError(f"{full}: expected a mapping ({tp.__name__}), got {type(value).__name__} {value!r}")
        _check_sections(value, tp, prefix=f"{full}.")


def _unknown_key_error(exc: oc_errors.ConfigKeyError, schema: type) -> ConfigError:
    full_key = str(exc.full_key or exc.key)
    parent, _, key = full_key.rpartition(".")
    valid = [user_name(k) for k in _valid_keys(schema, parent)]
    full_key, parent, key = user_dotted(full_key), user_dotted(parent), user_name(key)
    match = closest(key, valid)
    where = f"in '{parent}'" if parent else "at the top level"
    if match:
        suggestion = f"{parent}.{match}" if parent else match
        return ConfigError(f"unknown key '{full_key}' {where} (did you mean '{suggestion}'?)")
    return ConfigError(f"unknown key '{full_key}' {where}; valid keys: {', '.join(valid)}")


def _type_error(exc: oc_errors.ValidationError, schema: type) -> ConfigError:
    full_key = str(exc.full_key or exc.key or "")
    expected = _field_type(schema, full_key) if full_key else None
    value = getattr(exc, "value", None)
    if hasattr(value, "_value"):  # an OmegaConf node: show its content
        value = value._value()
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if expected is None:
        return ConfigError(f"{user_dotted(full_key) or 'recipe'}: {_first_line(exc)}")
    hint = ""
    if isinstance(value, bool) and not typing.get_origin(expected) and expected is not bool:
        hint = " (YAML reads a bare on/off/yes/no as a boolean: quote the word, e.g. key='off')"
    return ConfigError(
        f"{user_dotted(full_key)}: expected {_describe_type(expected)}, got {type(value).__name__} {value!r}{hint}"
    )


# ----------------------------------------------------------------------------------------------------------------
# Descriptions of recipe keys


@functools.cache
def field_docs(schema: type) -> dict[str, str]:
    """Each field's description: the string literal right after the field in its dataclass (or a base's), on one
    line."""
    docs: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
        except (OSError, TypeError):  # no source (a class made at run time)
            continue
        for stmt, following in itertools.pairwise(body):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[stmt.target.id] = " ".join(following.value.value.split())
    return docs


@dataclass(frozen=True)
class KeyInfo:
    """One resolved recipe key, for ``lvu config --explain``."""

    key: str
    value: Any
    type: str
    description: str


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass a field holds (also through ``X | None``), or None for leaves."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def key_infos(schema: type, cfg: DictConfig, prefix: str = "") -> list[KeyInfo]:
    """Every leaf key of ``cfg`` (typed by ``schema``) with its value, type and description, in schema order."""
    hints, docs = _hints(schema), field_docs(schema)
    out = []
    for f in dataclasses.fields(schema):
        key = f"{prefix}{user_name(f.name)}"
        node = cfg._get_node(f.name)  # type: ignore[union-attr]
        section = _dataclass_of(hints[f.name])
        if section is not None and OmegaConf.is_dict(node) and not OmegaConf.is_missing(cfg, f.name):
            out += key_infos(section, cfg[f.name], f"{key}.")
            continue
        value = "???" if OmegaConf.is_missing(cfg, f.name) else OmegaConf.to_container(
            OmegaConf.create({"v": cfg[f.name]}), resolve=False, enum_to_str=True)["v"]
        out.append(KeyInfo(key, value, _describe_type(hints[f.name]), docs.get(f.name, "")))
    return out


def explain(recipe: Recipe) -> str:
    """``key = value  # type: description`` for every resolved key of the recipe, aligned."""
    infos = key_infos(recipe.task.config_class, recipe.cfg)
    shown = [(f"{i.key} = {_show(i.value)}", f"# {i.type}: {i.description or '(no description)'}") for i in infos]
    width = min(60, max(len(left) for left, _ in shown))
    return "".join(f"{left:<{width}}  {right}\n" for left, right in shown)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    return "null" if value is None else str(value)


__all__ = [
    "KeyInfo",
    "Recipe",
    "RecipeConfig",
    "available_recipes",
    "explain",
    "field_docs",
    "find_recipe",
    "key_infos",
    "load_recipe",
    "recipes_dir",
    "user_keys",
    "validate",
]
