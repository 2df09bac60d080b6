"""The checkpoint library: read, inspect, consolidate and convert what ``lvu fit`` writes.

Used by the tasks (``init.from``, LV-MAE's ``probe.pretrained``), by the trainer assembly (resume checks, evaluating
a DeepSpeed folder without DeepSpeed) and by ``lvu ckpt ...``, whose command-line module only parses arguments.

Two formats exist on disk:

* a **Lightning file** (``torch.save`` of a dict with ``state_dict``, the loops' state and our ``lvu`` record);
* a **DeepSpeed folder** (``latest`` names a tag folder holding per-rank model and optimiser shards; Lightning's own
  entries and our record sit in rank 0's model-states file, the weights in the shards).

Nothing here imports Lightning or builds a model, so ``lvu ckpt inspect`` and ``lvu --help`` stay fast. Files are
memory-mapped: reading a checkpoint's record or shapes does not read its tensors.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lvu.errors import LvuError

RECORD_KEY = "lvu"  # the checkpoint entry holding task, recipe name, resolved config, world size, strategy
LIGHTNING_WRAPPER_PREFIX = "_forward_module."  # how DeepSpeed names a Lightning module's parameters
DEEPSPEED_TAG_FILE = "latest"
EXPORT_RECORD = "export.json"  # marks an `lvu ckpt export` folder: what it holds and where


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (renames), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, target: Path) -> None:
    """``torch.save`` to a temporary file beside ``target``, fsync, then an atomic rename: a process killed while
    writing leaves the previous file (or none), never a truncated one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    try:
        with partial.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
    except (OSError, RuntimeError) as exc:
        raise _write_error(exc, target) from exc
    finally:
        partial.unlink(missing_ok=True)
    fsync_path(target.parent)


SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE = 64 << 20  # below this much free space a failed write is taken for a full disk


def _write_error(exc: BaseException, target: Path) -> BaseException:
    """A full disk as one line that says so and where (torch's zip writer reports it as ``unexpected pos``, chained
    under two tracebacks); other failures as they are."""
    try:
        free = shutil.disk_usage(target.parent).free
    except OSError:
        free = None
    full = getattr(exc, "errno", None) in SPACE_ERRNOS or (free is not None and free < LOW_SPACE)
    if not full:
        return exc
    where = f"{free >> 20} MiB free" if free is not None else "free space unknown"
    return LvuError(f"no space left on device while writing {target} ({where} on its file system): free space "
                    f"there or point run_dir elsewhere; the previous checkpoint is intact")


def torch_load(source: Path) -> Any:
    """Load a ``torch.save`` file memory-mapped on the CPU, or say which file is unreadable."""
    # Checkpoints hold pickled Lightning loop state, so weights_only=False: only open checkpoints you trust.
    try:
        return torch.load(source, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # an old (non-zip) torch.save file cannot be memory-mapped: read it whole below
        pass
    try:
        return torch.load(source, map_location="cpu", weights_only=False)
    except Exception as exc:
        size = source.stat().st_size if source.is_file() else 0
        raise LvuError(f"{source} ({size} bytes) is not a PyTorch checkpoint lvu can read: not a file torch.save "
                       f"wrote, or damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None


def is_deepspeed_folder(path: Path) -> bool:
    return path.is_dir() and (path / DEEPSPEED_TAG_FILE).is_file()


def deepspeed_states_file(path: Path) -> Path:
    """The file of a DeepSpeed checkpoint folder that holds Lightning's entries (rank 0's model states)."""
    tag_file = path / DEEPSPEED_TAG_FILE
    if not tag_file.is_file():
        raise LvuError(f"{path} is a folder but not a DeepSpeed checkpoint (no 'latest'); give a checkpoint file, "
                       f"e.g. {path}/checkpoints/last.ckpt")
    tag = tag_file.read_text().strip()
    # ZeRO-1/2: mp_rank_00_model_states.pt; ZeRO-3: zero_pp_rank_0_mp_rank_00_model_states.pt.
    candidates = sorted((path / tag).glob("*mp_rank_00_model_states.pt"))
    if not candidates:
        raise LvuError(f"{path}: DeepSpeed tag '{tag}' has no model states file")
    return candidates[0]


def read_entries(path: Path) -> dict[str, Any]:
    """A checkpoint's top-level entries (``global_step``, ``epoch``, the lvu record, ...) without its tensors: the
    Lightning file itself, or a DeepSpeed folder's rank-0 model states (its ``module`` standing in for the
    ``state_dict``, empty under ZeRO-3 whose weights live in the shards)."""
    if not path.exists():
        raise LvuError(f"checkpoint {path} not found")
    if path.is_dir():
        entries = torch_load(deepspeed_states_file(path))
        if isinstance(entries, dict) and "module" in entries:
            entries["state_dict"] = entries.get("module") or {}
    else:
        entries = torch_load(path)
    if not isinstance(entries, dict) or "state_dict" not in entries:
        raise LvuError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    return entries


def record_of(entries: dict[str, Any]) -> dict[str, Any]:
    """The lvu record of a checkpoint's entries (empty for checkpoints not written by ``lvu fit``)."""
    return dict(entries.get(RECORD_KEY) or {})


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``lvu ckpt inspect`` shows."""

    path: str
    format: str  # "lightning" or "deepspeed"
    global_step: int | None
    epoch: int | None
    task: str | None
    recipe: str | None
    world_size: int | None
    strategy: str | None
    config_digest: str | None
    lvu_version: str | None
    lightning_version: str | None
    parameters: int
    tensors: int
    has_optimizer_state: bool
    config: dict[str, Any] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _parameter_count(entries: dict[str, Any], state: dict[str, Any]) -> int:
    shapes = entries.get("param_shapes")
    if shapes:  # DeepSpeed records full shapes; under ZeRO-3 the module holds only empty placeholders
        groups = shapes if isinstance(shapes, list) else [shapes]
        return int(sum(math.prod(shape) for group in groups for shape in group.values()))
    return int(sum(t.numel() for t in state.values() if hasattr(t, "numel")))


def read_info(path: Path) -> CheckpointInfo:
    """Step, epoch and the lvu record of a Lightning checkpoint file or DeepSpeed checkpoint folder."""
    entries = read_entries(path)
    record = record_of(entries)
    state = entries["state_dict"]
    return CheckpointInfo(
        path=str(path), format="deepspeed" if path.is_dir() else "lightning",
        global_step=entries.get("global_step"), epoch=entries.get("epoch"), task=record.get("task"),
        recipe=record.get("recipe"), world_size=record.get("world_size"), strategy=record.get("strategy"),
        config_digest=record.get("config_digest"), lvu_version=record.get("lvu_version"),
        lightning_version=entries.get("pytorch-lightning_version"), parameters=_parameter_count(entries, state),
        tensors=len(state), config=record.get("config"),
        has_optimizer_state=bool(entries.get("optimizer_states") or entries.get("optimizer")) or path.is_dir())


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint was saved at (-1 when it cannot be read)."""
    try:
        return int(read_entries(path).get("global_step") or -1)
    except Exception:  # a foreign or damaged file: never the one to resume
        return -1


@dataclass(frozen=True)
class TensorShapes:
    """A checkpoint's tensor shapes without its tensors. DeepSpeed folders list parameters only (no buffers)."""

    shapes: dict[str, tuple[int, ...]]
    record: dict[str, Any]
    parameters_only: bool


def tensor_shapes(path: Path) -> TensorShapes:
    if path.is_dir():
        entries = torch_load(deepspeed_states_file(path))
        groups = entries.get("param_shapes") or []
        groups = groups if isinstance(groups, list) else [groups]
        shapes = {name.removeprefix(LIGHTNING_WRAPPER_PREFIX): tuple(shape)
                  for group in groups for name, shape in group.items()}
        return TensorShapes(shapes, record_of(entries), parameters_only=True)
    entries = read_entries(path)
    state = entries["state_dict"]
    return TensorShapes({k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}, record_of(entries),
                        parameters_only=False)


SHOWN = 4  # mismatches listed per kind before "and N more"


def listed(kind: str, items: list[str]) -> str:
    """``kind: a, b, c, d and 3 more``."""
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{kind}: {', '.join(items[:SHOWN])}{more}"


def shape_differences(saved: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], *,
                      needed: Any = None, where: str = "checkpoint") -> list[str]:
    """Every way ``saved`` tensor shapes do not fit the ``expected`` ones, one phrase per kind of mismatch.

    Args:
        needed: ``needed(name) -> bool`` for expected tensors that must be in ``saved`` (default: all of them);
            a model restores the others itself (a frozen part from its own checkpoint).
        where: what ``saved`` is called in the phrases ("checkpoint", "init.from source").
    """
    missing = sorted(k for k in set(expected) - set(saved) if needed is None or needed(k))
    unexpected = sorted(set(saved) - set(expected))
    # An empty expected shape is a ZeRO-3 placeholder whose size is unknown here: not a mismatch.
    resized = [f"{k} ({where} {list(saved[k])}, model {list(expected[k])})" for k in sorted(set(saved) & set(expected))
               if saved[k] != expected[k] and math.prod(expected[k]) > 0]
    problems = []
    if missing:
        problems.append(listed(f"{len(missing)} tensor(s) the model has and the {where} lacks", missing))
    if unexpected:
        problems.append(listed(f"{len(unexpected)} tensor(s) in the {where} the model lacks", unexpected))
    if resized:
        problems.append(listed(f"{len(resized)} tensor(s) of another shape", resized))
    return problems


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}.{key}").items()}
    return {prefix: tree}


def settings_changed(saved_config: dict[str, Any], config: dict[str, Any], section: str = "model") -> list[str]:
    """``section`` settings that differ between a checkpoint's recorded config and ``config``, as
    ``key=old->new``: the likely reason when its tensors do not fit. A setting the checkpoint's recipe does not
    have (added to lvu after it was saved) is listed as ``key=(not recorded)->new``: set it to its old behaviour."""
    saved = _flatten((saved_config or {}).get(section) or {}, section)
    ours = _flatten((config or {}).get(section) or {}, section)
    changed = [f"{k}={saved[k]!r}->{ours.get(k)!r}" for k in sorted(saved) if saved[k] != ours.get(k)]
    if saved:
        changed += [f"{k}=(not recorded)->{ours[k]!r}" for k in sorted(ours) if k not in saved]
    return changed


@dataclass(frozen=True)
class Consolidated:
    """A whole model's fp32 weights from any checkpoint, with the checkpoint's other entries."""

    state: dict[str, Any]
    entries: dict[str, Any]

    @property
    def record(self) -> dict[str, Any]:
        return record_of(self.entries)

    @property
    def global_step(self) -> int | None:
        return self.entries.get("global_step")


def consolidated_state_dict(path: Path) -> Consolidated:
    """The fp32 state dict of the whole model from a Lightning file or a DeepSpeed ZeRO folder (every rank's
    partition gathered with DeepSpeed's zero_to_fp32, Lightning's wrapper prefix removed)."""
    if not path.exists():
        raise LvuError(f"checkpoint {path} not found")
    if path.is_dir():
        # Imported here: DeepSpeed takes seconds to import and only ZeRO folders need it.
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        entries = torch_load(deepspeed_states_file(path))
        tag = (path / DEEPSPEED_TAG_FILE).read_text().strip()
        state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag)
        state = {k.removeprefix(LIGHTNING_WRAPPER_PREFIX): v for k, v in state.items()}
    else:
        entries = read_entries(path)
        state = entries["state_dict"]
    state = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()}
    return Consolidated(state, entries)


@dataclass(frozen=True)
class Converted:
    path: Path
    tensors: int
    parameters: int
    global_step: int | None


def convert(path: Path, out: Path) -> Converted:
    """Write one consolidated fp32 checkpoint: ``state_dict`` plus step, epoch and the lvu record, without
    optimiser or loop state. ``lvu validate/test/predict --ckpt``, ``init.from`` and ``probe.pretrained`` take it."""
    loaded = consolidated_state_dict(path)
    entries = loaded.entries
    payload = {"state_dict": loaded.state, "global_step": entries.get("global_step"), "epoch": entries.get("epoch"),
               "pytorch-lightning_version": entries.get("pytorch-lightning_version")}
    if entries.get(RECORD_KEY):
        payload[RECORD_KEY] = {**entries[RECORD_KEY], "converted_from": str(path)}
    atomic_save(payload, out)
    return Converted(out, len(loaded.state), int(sum(t.numel() for t in loaded.state.values() if torch.is_tensor(t))),
                     payload["global_step"])


__all__ = [
    "EXPORT_RECORD",
    "RECORD_KEY",
    "CheckpointInfo",
    "Consolidated",
    "Converted",
    "TensorShapes",
    "atomic_save",
    "checkpoint_step",
    "consolidated_state_dict",
    "convert",
    "deepspeed_states_file",
    "fsync_path",
    "is_deepspeed_folder",
    "listed",
    "read_entries",
    "read_info",
    "record_of",
    "settings_changed",
    "shape_differences",
    "tensor_shapes",
    "torch_load",
]
