"""LinVT checkpoints to a folder that loads without lvu's training stack (``lvu ckpt export CKPT OUT``).

OUT/
  linvt/     config.json + model.safetensors       ``LinVT.from_pretrained(OUT / "linvt")``
  adapter/   peft's adapter_config.json + adapter_model.safetensors (stage 2 only):
             ``PeftModel.from_pretrained(host.language_model, OUT / "adapter")``
  host/      the host's config, tokenizer and processor files (no weights):
             ``AutoConfig.from_pretrained(OUT / "host")``; the weights stay where ``export.json`` says
  export.json  task, step, the host checkpoint the run used, the resolved recipe

A ZeRO-3 checkpoint is consolidated first (DeepSpeed's zero_to_fp32 gathers every partition, LoRA adapters
included), so the export holds full tensors whatever the training strategy was. A later run starts from an export
with ``init.export=OUT`` (``linvt.instruct``), e.g. ``lvu predict linvt/instruct init.export=OUT ...``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from lvu.errors import LvuError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
PEFT_PREFIX = "base_model.model."  # how PeftModel names its wrapped model's parameters in saved adapters


def load_trained(module: Any, state: dict[str, torch.Tensor], source: str) -> None:
    """Put a checkpoint's trained tensors (LinVT, LoRA, the contrastive scale) into a freshly built module; the
    frozen host weights it lacks stay as loaded from ``host.path``."""
    trained = {k: v for k, v in state.items() if not k.startswith("host.") or "lora_" in k}
    missing, unexpected = module.load_state_dict(trained, strict=False)
    lost = [k for k in missing if not k.startswith("host.") or "lora_" in k]
    if lost or unexpected:
        raise LvuError(f"{source} does not fit this model (missing {lost[:3]}, unexpected {unexpected[:3]}); use the "
                       f"recipe settings it was trained with")


def export_linvt(cfg: Any, state: dict[str, torch.Tensor], client: dict[str, Any], out: Path) -> dict[str, Any]:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from lvu.tasks.registry import get_task

    info = client.get("lvu") or {}
    if getattr(cfg, "init", None) is not None:
        cfg.init.align = cfg.init.export = None  # the checkpoint holds everything; do not load stage 1 again
    module = get_task(info["task"]).build_module(cfg)
    load_trained(module, state, "the checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    module.linvt.save_pretrained(out / "linvt")
    adapter = None
    lora = getattr(module, "lora_config", None)
    if lora is not None:
        adapter = out / "adapter"
        adapter.mkdir(exist_ok=True)
        weights = get_peft_model_state_dict(module.host.language_model)
        save_file({PEFT_PREFIX + k: v.detach().contiguous() for k, v in weights.items()},
                  str(adapter / "adapter_model.safetensors"))
        lora.save_pretrained(str(adapter))
    host_src, host_out = Path(cfg.host.path), out / "host"
    host_out.mkdir(exist_ok=True)
    for item in host_src.iterdir():
        if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES) and ".safetensors" not in item.name:
            shutil.copy2(item, host_out / item.name)
    record = {"task": info.get("task"), "global_step": client.get("global_step"), "host_path": str(host_src),
              "linvt": "linvt", "adapter": "adapter" if adapter else None, "config": info.get("config")}
    (out / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return {"path": str(out), "task": record["task"], "global_step": record["global_step"],
            "linvt_parameters": sum(p.numel() for p in module.linvt.parameters()),
            "adapter_tensors": len(weights) if adapter else 0}


def load_export(module: Any, folder: Path) -> None:
    """Start ``module`` (a LinVT task module, LoRA already injected for stage 2) from an export folder."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from lvu.models.linvt import LinVT

    if not (folder / "export.json").is_file():
        raise LvuError(f"init.export: {folder} is not an `lvu ckpt export` folder (no export.json)")
    linvt = LinVT.from_pretrained(folder / "linvt")
    if linvt.cfg != module.linvt.cfg:
        raise LvuError(f"init.export: the exported LinVT ({linvt.cfg}) differs from this recipe's ({module.linvt.cfg})")
    module.linvt.load_state_dict(linvt.state_dict())
    adapter = folder / "adapter" / "adapter_model.safetensors"
    if adapter.is_file():
        weights = {k.removeprefix(PEFT_PREFIX): v for k, v in load_file(str(adapter)).items()}
        result = set_peft_model_state_dict(module.host.language_model, weights)
        if result.unexpected_keys:
            raise LvuError(f"init.export: adapter tensors {result.unexpected_keys[:3]} match no LoRA module here "
                           f"(same lora.targets as the exported run?)")
