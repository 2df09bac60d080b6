"""A host-LM checkpoint to files that load without lvu's training stack (``lvu ckpt export CKPT OUT``).

OUT/
  <method>/    each method module: its own ``save_pretrained`` (LinVT: config.json + model.safetensors,
               ``LinVT.from_pretrained(OUT / "linvt")``), or its weights as model.safetensors
  adapter/     peft's adapter_config.json + adapter_model.safetensors for the LLM when it trained with LoRA, keyed
               on the whole transformers model, its target modules limited to the LLM (``export.json["adapter_base"]``,
               e.g. ``model.language_model``, names where in that model), ``base_model_name_or_path`` the host:
               ``PeftModel.from_pretrained(<Family>.from_pretrained(host), OUT / "adapter")``; other parts trained
               with LoRA get ``adapter-<part>/``
  host/        the host's config, tokenizer and processor files; with its trained weights when any host part
               trained in full (a family's ``from_pretrained`` folder, or a composed host's folder), so that
               ``host.path=OUT/host`` (or the family's own class) loads the trained model
  export.json  task, step, where the host came from, each part's mode, what was written, the resolved recipe

Without a fully trained host part the export never loads the host's weights (a 7B or 72B host would need its full
size in memory): method modules are rebuilt from the recipe, adapters renamed from the checkpoint. A ZeRO-3
checkpoint is consolidated first, so the export holds whole tensors whatever the training strategy was. A later run
starts from an export with ``init.from=OUT``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lvu.ckpt import EXPORT_RECORD, RECORD_KEY
from lvu.errors import LvuError
from lvu.models.vlm import ComposedHost
from lvu.tasks.host_lm.config import HostLMRecipe, PartMode
from lvu.tasks.host_lm.host import build_host, host_class, host_record
from lvu.tasks.host_lm.parts import HOST_PREFIX, is_lora, lora_config
from lvu.tasks.host_lm.source import PEFT_PREFIX

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
# A method's exporter: (recipe, the module's tensors without its prefix, folder) -> what to report.
MethodSaver = Callable[[Any, dict[str, torch.Tensor], Path], dict[str, Any]]


def save_weights(cfg: Any, state: dict[str, torch.Tensor], folder: Path) -> dict[str, Any]:
    """The default method exporter: the module's weights as ``model.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return {"parameters": int(sum(v.numel() for v in state.values()))}


def _method_modules(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The method's modules' tensors by module (tensors outside the host with a dotted name; top-level loss
    parameters such as a contrastive temperature are training state, not part of the model)."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(HOST_PREFIX) or "." not in key:
            continue
        name, rest = key.split(".", 1)
        modules.setdefault(name, {})[rest] = value
    return modules


def _adapters(cfg: HostLMRecipe, state: dict[str, torch.Tensor], out: Path) -> dict[str, dict[str, Any]]:
    """Each lora host part's adapter, named as peft saves one for a PeftModel around the *whole* transformers model
    that holds it (a family's ``...ForConditionalGeneration``, a composed host's LLM), with target modules limited to
    that part: ``PeftModel.from_pretrained(<Family>.from_pretrained(host), OUT/adapter)`` loads it whole."""
    cls = host_class(cfg.host)
    written: dict[str, dict[str, Any]] = {}
    for part in ("vision", "projector", "llm"):
        if PartMode(getattr(cfg.parts, part).mode) != PartMode.lora:
            continue
        by_base: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            if not (key.startswith(HOST_PREFIX) and is_lora(key)):
                continue
            name = key.removeprefix(HOST_PREFIX)
            owner, base = cls.part_path(name)
            if owner != part:
                continue
            root = base.split(".")[0]  # the host's transformers model (``model``), or a tower of a composed host
            tensor = name.removeprefix(root + ".").replace(".lora_A.default.", ".lora_A.")
            by_base.setdefault(base, {})[PEFT_PREFIX + tensor.replace(".lora_B.default.", ".lora_B.")] = value
        if len(by_base) > 1:
            raise LvuError(f"the {part} part has adapters in several modules ({', '.join(by_base)}); one peft "
                           f"adapter per part is exported")
        for base, tensors in by_base.items():
            root, _, inside = base.partition(".")
            folder = out / ("adapter" if part == "llm" else f"adapter-{part}")
            folder.mkdir(parents=True, exist_ok=True)
            weights = {k: v.detach().contiguous() for k, v in tensors.items()}
            save_file(weights, str(folder / "adapter_model.safetensors"))
            settings = lora_config(cfg.lora)
            if inside:  # only this part's modules: the other towers have layers of the same names
                settings.target_modules = rf"{re.escape(inside)}\..*\.({'|'.join(map(re.escape, cfg.lora.targets))})"
            settings.base_model_name_or_path = _base_model_path(cfg, root)
            settings.save_pretrained(str(folder))
            written[part] = {"path": folder.name, "module": root, "base": inside, "tensors": len(weights),
                             "base_model": settings.base_model_name_or_path}
    return written


def _base_model_path(cfg: HostLMRecipe, root: str) -> str | None:
    """The folder ``from_pretrained`` loads the adapter's base model from."""
    if cfg.host.path:
        return cfg.host.path
    return cfg.host.llm if root == "model" else cfg.host.vision


def _host(cfg: HostLMRecipe, state: dict[str, torch.Tensor], out: Path) -> bool:
    """``host/``: trained weights when a host part trained in full, else the config files only. Returns whether
    weights were written."""
    full = [p for p in ("vision", "projector", "llm") if PartMode(getattr(cfg.parts, p).mode) == PartMode.full]
    folder = out / "host"
    if full:
        host = build_host(cfg.host)
        trained = {k.removeprefix(HOST_PREFIX): v for k, v in state.items()
                   if k.startswith(HOST_PREFIX) and not is_lora(k)}
        result = host.load_state_dict(trained, strict=False)
        if result.unexpected_keys:
            raise LvuError(f"the checkpoint's host tensors {result.unexpected_keys[:3]} are not in {cfg.host}")
        if isinstance(host, ComposedHost):
            host.save_pretrained(folder)
        else:
            host.model.save_pretrained(folder)
            host.tokenizer.save_pretrained(folder)
            _copy_config_files(Path(cfg.host.path), folder, overwrite=False)  # type: ignore[arg-type]
        return True
    if cfg.host.path:
        folder.mkdir(exist_ok=True)
        _copy_config_files(Path(cfg.host.path), folder, overwrite=True)
    return False


def _copy_config_files(source: Path, folder: Path, overwrite: bool) -> None:
    for item in source.iterdir():
        if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES) and ".safetensors" not in item.name \
                and (overwrite or not (folder / item.name).exists()):
            shutil.copy2(item, folder / item.name)


def export_host_lm(cfg: HostLMRecipe, state: dict[str, torch.Tensor], entries: dict[str, Any], out: Path, *,
                   savers: dict[str, MethodSaver] | None = None) -> dict[str, Any]:
    """Write the export of a host-LM checkpoint (see the module docstring).

    Args:
        savers: each method module's exporter (default :func:`save_weights`).
    """
    record = entries.get(RECORD_KEY) or {}
    out.mkdir(parents=True, exist_ok=True)
    methods = {}
    for name, tensors in _method_modules(state).items():
        methods[name] = (savers or {}).get(name, save_weights)(cfg, tensors, out / name)
    adapters = _adapters(cfg, state, out)
    host_weights = _host(cfg, state, out)
    written = [*methods, *(info["path"] for info in adapters.values()), *(["host"] if (out / "host").exists() else [])]
    llm = adapters.get("llm")
    info = {
        "task": record.get("task"), "global_step": entries.get("global_step"), "host": host_record(cfg.host),
        "host_path": cfg.host.path, "host_weights": "host" if host_weights else None,
        "parts": {p: PartMode(getattr(cfg.parts, p).mode).value for p in ("vision", "projector", "llm", "method")},
        "method": {name: name for name in methods}, "adapters": adapters,
        # The first LinVT exports' keys, still read by older code and scripts.
        "adapter": llm["path"] if llm else None, "adapter_base": llm["base"] if llm else None,
        **({"linvt": "linvt"} if "linvt" in methods else {}),
        "written": written, "config": record.get("config"),
    }
    (out / EXPORT_RECORD).write_text(json.dumps(info, indent=2) + "\n")
    return {"path": str(out), "task": info["task"], "global_step": info["global_step"], "methods": methods,
            "adapter_tensors": sum(a["tensors"] for a in adapters.values()), "host_weights": host_weights}
