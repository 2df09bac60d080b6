"""Does a checkpoint fit the model a recipe builds? Checked before training, so the answer is one message listing
every mismatch, instead of the first shape error from deep inside ``load_state_dict`` or DeepSpeed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lvu.errors import LvuError
from lvu.train.ckpt_cli import _deepspeed_client_state, _load

SHOWN = 4  # mismatches listed per kind before "and N more"


def _checkpoint_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, Any], bool]:
    """(tensor name -> shape, the lvu record, whether only parameters are listed) without loading tensors."""
    if path.is_dir():
        client = _load(_deepspeed_client_state(path))
        groups = client.get("param_shapes") or []
        groups = groups if isinstance(groups, list) else [groups]
        shapes = {name: tuple(shape) for group in groups for name, shape in group.items()}
        return shapes, client.get("lvu") or {}, True
    ckpt = _load(path)
    state = ckpt.get("state_dict") or {}
    return {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}, ckpt.get("lvu") or {}, False


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}.{key}").items()}
    return {prefix: tree}


def _listed(kind: str, items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{kind}: {', '.join(items[:SHOWN])}{more}"


def check_compatible(path: Path, task: str, config: dict[str, Any], module: nn.Module) -> None:
    """Raise one LvuError naming every way the checkpoint at ``path`` does not fit ``module`` of ``task``."""
    saved, record, parameters_only = _checkpoint_shapes(path)
    problems = []
    if record.get("task") and record["task"] != task:
        problems.append(f"task: checkpoint '{record['task']}' (recipe {record.get('recipe')}), this recipe '{task}'")
    # DeepSpeed lists parameters only; under ZeRO-3 they are empty placeholders whose real shape is ds_shape.
    tensors = module.named_parameters() if parameters_only else module.state_dict().items()
    expected = {name: tuple(getattr(t, "ds_shape", t.shape)) for name, t in tensors}
    # Modules may restore some tensors themselves (e.g. a frozen encoder from its own file) and not save them.
    excluded = tuple(getattr(module, "checkpoint_excludes", ()))
    missing = sorted(k for k in set(expected) - set(saved) if not (excluded and k.startswith(excluded)))
    unexpected = sorted(set(saved) - set(expected))
    shared = sorted(set(saved) & set(expected))
    resized = [f"{k} (checkpoint {list(saved[k])}, model {list(expected[k])})" for k in shared
               if saved[k] != expected[k] and math.prod(expected[k]) > 0]
    if missing:
        problems.append(_listed(f"{len(missing)} tensor(s) the model has and the checkpoint lacks", missing))
    if unexpected:
        problems.append(_listed(f"{len(unexpected)} tensor(s) in the checkpoint the model lacks", unexpected))
    if resized:
        problems.append(_listed(f"{len(resized)} tensor(s) of another shape", resized))
    if not problems:
        return
    saved_model = _flatten((record.get("config") or {}).get("model") or {}, "model")
    ours = _flatten(config.get("model") or {}, "model")
    changed = [f"{k}={saved_model[k]!r}->{ours.get(k)!r}" for k in sorted(saved_model) if saved_model[k] != ours.get(k)]
    if changed:
        problems.append(_listed("model settings changed (checkpoint->recipe)", changed))
    raise LvuError(f"checkpoint {path} does not fit this recipe: " + "; ".join(problems))
