"""``init.from``: start a host-LM task's parts from an earlier stage.

The source is a Lightning checkpoint file, a DeepSpeed folder (partitions gathered) or an ``lvu ckpt export`` folder
(its method modules and peft adapters; an export's trained host weights load through ``host.path``). Its tensors are
sorted into parts the way this task sorts its own; the parts asked for (``init.parts``, by default every part the
source holds weights of) are checked against this task's, every difference is listed in one error, and then they
are loaded. A part trained with LoRA in the source comes back as adapters; full weights of a part that trains with
LoRA here load under the adapters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from safetensors.torch import load_file
from torch import nn

from lvu.ckpt import EXPORT_RECORD, consolidated_state_dict, listed, settings_changed, shape_differences
from lvu.errors import LvuError
from lvu.tasks.host_lm.config import PartMode
from lvu.tasks.host_lm.parts import HOST_PREFIX, METHOD, PartPlan, base_name, is_lora, lora_config

PEFT_PREFIX = "base_model.model."  # how PeftModel names its wrapped model's tensors in saved adapters
ALL_PARTS = ("vision", "projector", "llm", METHOD)


@dataclass(frozen=True)
class InitSource:
    """Weights an earlier stage left, named as a task module names them."""

    path: Path
    state: dict[str, torch.Tensor]
    record: dict[str, Any]  # the source's lvu record (task, config), or an export's
    adapter_settings: LoraConfig | None = None  # an export's adapter_config.json
    host_weights: str | None = None  # an export folder holding trained host weights (they load via host.path)
    notes: list[str] = field(default_factory=list)


def read_source(path: Path) -> InitSource:
    if not path.exists():
        raise LvuError(f"init.from: {path} not found")
    if path.is_dir() and (path / EXPORT_RECORD).is_file():
        return _read_export(path)
    loaded = consolidated_state_dict(path)
    return InitSource(path, loaded.state, loaded.record)


def _read_export(folder: Path) -> InitSource:
    record = json.loads((folder / EXPORT_RECORD).read_text())
    state: dict[str, torch.Tensor] = {}
    # Method modules: {"linvt": "linvt"} (the first LinVT exports wrote "linvt": "linvt" at the top level).
    methods = record.get("method") or ({"linvt": record["linvt"]} if record.get("linvt") else {})
    for name, sub in methods.items():
        weights = folder / sub / "model.safetensors"
        if not weights.is_file():
            raise LvuError(f"init.from: {folder} names method module {name} but has no {weights}")
        state.update({f"{name}.{k}": v for k, v in load_file(str(weights)).items()})
    adapters = record.get("adapters") or (
        {"llm": {"path": record["adapter"], "module": record["adapter_base"]}} if record.get("adapter") else {})
    settings = None
    for info in adapters.values():
        settings = LoraConfig.from_pretrained(str(folder / info["path"]))
        weights = load_file(str(folder / info["path"] / "adapter_model.safetensors"))
        for key, value in weights.items():
            name = key.removeprefix(PEFT_PREFIX)
            for kind in ("lora_A", "lora_B"):
                name = name.replace(f".{kind}.weight", f".{kind}.default.weight")
            state[f"{HOST_PREFIX}{info['module']}.{name}"] = value
    return InitSource(folder, state, {"task": record.get("task"), "config": record.get("config") or {}},
                      adapter_settings=settings, host_weights=record.get("host_weights"))


def target_names(targets: Any) -> set[str]:
    """LoRA target module names from a peft config: a list, or an export's pattern limited to one part
    (``model\\.language_model\\..*\\.(q_proj|k_proj)``, see lvu.tasks.host_lm.export)."""
    if isinstance(targets, str):
        group = re.search(r"\(([^()]*)\)$", targets)
        return {name.replace("\\", "") for name in group.group(1).split("|")} if group else {targets}
    return set(targets or ())


def _shapes(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in tensors.items()}


def load_init(module: nn.Module, plan: PartPlan, source: InitSource, parts: list[str] | None,
              method_modules: tuple[str, ...], config: dict[str, Any]) -> list[str]:
    """Load ``parts`` of ``source`` into ``module`` (a host-LM task); returns the parts loaded.

    Args:
        method_modules: attribute names of the method's modules (their tensors must match both ways; the method's
            loss parameters, e.g. a contrastive temperature, are taken when both sides have them).
        config: this recipe as a plain dict (for the list of changed settings in the error).
    """
    params = {name for name, _ in module.named_parameters()}
    own = module.state_dict()
    by_part: dict[str, dict[str, torch.Tensor]] = {}
    foreign = []
    for key, value in source.state.items():
        try:
            by_part.setdefault(plan.part_of(key), {})[key] = value
        except LvuError:  # a host tensor of another family
            foreign.append(key)
    # A part is held when the source has its parameters (a frozen part may have left buffers behind).
    base_params = {base_name(p) for p in params}
    holds = [p for p in ALL_PARTS if any(k in params or k in base_params or is_lora(k) for k in by_part.get(p, {}))]
    wanted = list(parts) if parts is not None else holds
    problems = [listed(f"{len(foreign)} host tensor(s) of another model", sorted(foreign))] if foreign else []
    selected: dict[str, torch.Tensor] = {}
    for part in wanted:
        if part not in holds:
            why = f"; the host's own weights come from {_host_source(config)}" if part != METHOD else ""
            problems.append(f"{part}: the source holds no {part} weights (frozen there){why}")
            continue
        found = by_part[part]
        ours = {k: own[k] for k in own if plan.part_of(k) == part}
        if part == METHOD:
            problems += _method_part(found, ours, method_modules, selected)
        else:
            problems += _host_part(part, plan, found, ours, params, selected)
    problems += _lora_settings(plan, source, selected, config)
    where = f"init.from: {source.path} (task {source.record.get('task')})"
    if problems:
        changed = settings_changed(source.record.get("config") or {}, config)
        if changed:
            problems.append(listed("model settings changed (source->recipe)", changed))
        raise LvuError(f"{where} does not fit this recipe: " + "; ".join(problems))
    result = module.load_state_dict(selected, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # every name selected is one of the module's own
    return wanted


def _host_source(config: dict[str, Any]) -> str:
    host = config.get("host") or {}
    return f"host.path ({host['path']})" if host.get("path") else "host.vision and host.llm"


def _method_part(found: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], modules: tuple[str, ...],
                 selected: dict[str, torch.Tensor]) -> list[str]:
    """The method's modules must match both ways; its loss parameters are taken where both sides have them."""

    def in_modules(key: str) -> bool:
        return key.split(".", 1)[0] in modules

    saved = {k: v for k, v in found.items() if in_modules(k)}
    expected = {k: v for k, v in ours.items() if in_modules(k)}
    problems = shape_differences(_shapes(saved), _shapes(expected), where="init.from source")
    shared_loss = [k for k in found if not in_modules(k) and k in ours and found[k].shape == ours[k].shape]
    selected.update({k: saved[k] for k in saved if k in expected})
    selected.update({k: found[k] for k in shared_loss})
    return problems


def _host_part(part: str, plan: PartPlan, found: dict[str, torch.Tensor], ours: dict[str, torch.Tensor],
               params: set[str], selected: dict[str, torch.Tensor]) -> list[str]:
    """Adapters load as adapters (when this part has them); full weights load under any adapters."""
    problems = []
    adapters = {k: v for k, v in found.items() if is_lora(k)}
    weights = {k: v for k, v in found.items() if not is_lora(k)}
    mode = plan.mode(part)
    if adapters:
        if mode != PartMode.lora:
            problems.append(f"{part}: the source trained it with LoRA adapters and this recipe has "
                            f"parts.{part}.mode={mode.value} (start from a source with its full weights, or train "
                            f"it with lora here too)")
        else:
            expected = {k: v for k, v in ours.items() if is_lora(k)}
            problems += shape_differences(_shapes(adapters), _shapes(expected), where="init.from source")
            selected.update({k: v for k, v in adapters.items() if k in expected})
    if weights:
        by_base = {base_name(k): k for k in ours if not is_lora(k)}
        # Parameters must all be there; buffers (position ids, rotary tables) are taken when present.
        expected = {b: ours[k] for b, k in by_base.items() if k in params}
        if set(expected) - set(weights):  # weights that never reach the LLM are never trained, so never saved
            expected = {b: t for b, t in expected.items() if by_base[b] not in plan.unreachable()}
        present = {k: v for k, v in weights.items() if k in expected}
        problems += shape_differences(_shapes(present), _shapes(expected), where="init.from source")
        extra = sorted(k for k in weights if k not in by_base)
        if extra:
            problems.append(listed(f"{len(extra)} {part} tensor(s) in the init.from source the model lacks", extra))
        selected.update({by_base[k]: v for k, v in weights.items() if k in by_base})
    return problems


def _lora_settings(plan: PartPlan, source: InitSource, selected: dict[str, torch.Tensor],
                   config: dict[str, Any]) -> list[str]:
    """Adapters trained with another rank, scale or targets cannot continue as these (the rank shows in shapes;
    alpha and targets do not)."""
    if not any(is_lora(k) for k in selected):
        return []
    ours = lora_config(plan.lora)
    theirs = source.adapter_settings
    if theirs is not None:
        mine = (ours.r, ours.lora_alpha, target_names(ours.target_modules))
        saved = (theirs.r, theirs.lora_alpha, target_names(theirs.target_modules))
        if mine != saved:
            return [f"the adapters were trained with lora r={theirs.r}, alpha={theirs.lora_alpha}, targets="
                    f"{sorted(target_names(theirs.target_modules))}; this recipe has r={ours.r}, "
                    f"alpha={ours.lora_alpha}, targets={sorted(target_names(ours.target_modules))}"]
        return []
    changed = settings_changed(source.record.get("config") or {}, config, section="lora")
    changed = [c for c in changed if not c.startswith("lora.dropout")]  # dropout may change between stages
    return [listed("the adapters were trained with other lora settings (source->recipe)", changed)] if changed else []
