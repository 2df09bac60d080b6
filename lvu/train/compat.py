"""Does a checkpoint fit the model a recipe builds? Checked before training, so the answer is one message listing
every mismatch, instead of the first shape error from deep inside ``load_state_dict`` or DeepSpeed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lvu.ckpt import listed, settings_changed, shape_differences, tensor_shapes
from lvu.errors import LvuError
from lvu.tasks.registry import same_task


def check_compatible(path: Path, task: str, config: dict[str, Any], module: nn.Module) -> None:
    """Raise one LvuError naming every way the checkpoint at ``path`` does not fit ``module`` of ``task``."""
    found = tensor_shapes(path)
    record = found.record
    problems = []
    if record.get("task") and not same_task(record["task"], task):
        problems.append(f"task: checkpoint '{record['task']}' (recipe {record.get('recipe')}), this recipe '{task}'")
    # DeepSpeed lists parameters only; under ZeRO-3 they are empty placeholders whose real shape is ds_shape.
    tensors = module.named_parameters() if found.parameters_only else module.state_dict().items()
    expected = {name: tuple(getattr(t, "ds_shape", t.shape)) for name, t in tensors}
    # Modules may restore some tensors themselves (a frozen encoder from its own file) and not save them: they say
    # which tensors their checkpoints keep (``saved_in_checkpoint(name)``).
    problems += shape_differences(found.shapes, expected, needed=getattr(module, "saved_in_checkpoint", None))
    if not problems:
        return
    changed = settings_changed(record.get("config") or {}, config)
    if changed:
        problems.append(listed("model settings changed (checkpoint->recipe)", changed))
    raise LvuError(f"checkpoint {path} does not fit this recipe: " + "; ".join(problems))
