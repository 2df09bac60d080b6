"""LinVT checkpoints to a folder that loads without lvu's training stack (``lvu ckpt export CKPT OUT``).

OUT/
  linvt/     config.json + model.safetensors       ``LinVT.from_pretrained(OUT / "linvt")``
  adapter/   peft's adapter_config.json + adapter_model.safetensors (stage 2 only), keyed on the host's decoder
             LLM (``export.json["adapter_base"]``, e.g. ``model.model.language_model``):
             ``PeftModel.from_pretrained(<that module of the host model>, OUT / "adapter")``
  host/      the host's config, tokenizer and processor files (no weights):
             ``AutoConfig.from_pretrained(OUT / "host")``; the weights stay where ``export.json`` says
  export.json  task, step, the host checkpoint the run used, the resolved recipe

The export never loads the host's weights (a 7B or 72B host would need its full size in memory): LinVT is rebuilt
from the recipe and the host's hidden size, and the adapter tensors are renamed from the checkpoint. A ZeRO-3
checkpoint is consolidated first (DeepSpeed's zero_to_fp32 gathers every partition, LoRA adapters included), so the
export holds whole tensors whatever the training strategy was. A later run starts from an export with
``init.export=OUT`` (``linvt.instruct``), e.g. ``lvu predict linvt/instruct init.export=OUT ...``.
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
EXPORT_PARTS = ("linvt", "adapter", "host", "export.json")


def _host_class(host_path: Path) -> Any:
    from lvu.models.vlm.families import FAMILIES

    model_type = json.loads((host_path / "config.json").read_text()).get("model_type")
    if model_type not in FAMILIES:
        raise LvuError(f"host checkpoint {host_path}: model type '{model_type}' is not a supported host family")
    return FAMILIES[model_type][1]


def _adapter_tensors(state: dict[str, torch.Tensor], base: str) -> dict[str, torch.Tensor]:
    """LoRA tensors of the checkpoint named as peft saves them for a PeftModel around the module at ``base``."""
    prefix = f"host.{base}."
    out = {}
    for key, value in state.items():
        if "lora_" not in key:
            continue
        if not key.startswith(prefix):
            raise LvuError(f"LoRA tensor {key} is not inside the host LLM ({base}); cannot export it as an adapter")
        name = key.removeprefix(prefix).replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
        out[PEFT_PREFIX + name] = value.detach().contiguous()
    return out


def export_linvt(cfg: Any, state: dict[str, torch.Tensor], client: dict[str, Any], out: Path) -> dict[str, Any]:
    from safetensors.torch import save_file
    from transformers import AutoConfig

    from lvu.models.linvt import LinVT
    from lvu.tasks.linvt import linvt_config, load_linvt_weights, lora_config

    info = client.get("lvu") or {}
    host_path = Path(cfg.host.path)
    dim = AutoConfig.from_pretrained(str(host_path)).get_text_config().hidden_size
    linvt = LinVT(linvt_config(cfg.model, dim))
    load_linvt_weights(linvt, state, "the checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    linvt.save_pretrained(out / "linvt")
    base = _host_class(host_path).language_model_path
    adapter = _adapter_tensors(state, base)
    if adapter:
        (out / "adapter").mkdir(exist_ok=True)
        save_file(adapter, str(out / "adapter" / "adapter_model.safetensors"))
        lora_config(cfg.lora).save_pretrained(str(out / "adapter"))
    (out / "host").mkdir(exist_ok=True)
    for item in host_path.iterdir():
        if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES) and ".safetensors" not in item.name:
            shutil.copy2(item, out / "host" / item.name)
    record = {"task": info.get("task"), "global_step": client.get("global_step"), "host_path": str(host_path),
              "linvt": "linvt", "adapter": "adapter" if adapter else None, "adapter_base": base if adapter else None,
              "config": info.get("config")}
    (out / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return {"path": str(out), "task": record["task"], "global_step": record["global_step"],
            "linvt_parameters": sum(p.numel() for p in linvt.parameters()), "adapter_tensors": len(adapter)}


def clear_export(out: Path) -> None:
    """Remove an earlier export's parts from ``out`` (``--force``), so no stale adapter survives a new export."""
    for name in EXPORT_PARTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def load_export(module: Any, folder: Path) -> None:
    """Start ``module`` (a LinVT task module, LoRA already injected for stage 2) from an export folder."""
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    from lvu.models.linvt import LinVT

    if not (folder / "export.json").is_file():
        raise LvuError(f"init.export: {folder} is not an `lvu ckpt export` folder (no export.json)")
    record = json.loads((folder / "export.json").read_text())
    linvt = LinVT.from_pretrained(folder / record["linvt"])
    if linvt.cfg != module.linvt.cfg:
        raise LvuError(f"init.export: the exported LinVT ({linvt.cfg}) differs from this recipe's ({module.linvt.cfg})")
    module.linvt.load_state_dict(linvt.state_dict())
    if not record.get("adapter"):
        return
    saved = LoraConfig.from_pretrained(str(folder / record["adapter"]))
    ours = module.lora_config
    mine, theirs = (ours.r, ours.lora_alpha, set(ours.target_modules)), (saved.r, saved.lora_alpha,
                                                                         set(saved.target_modules))
    if mine != theirs:
        raise LvuError(f"init.export: the adapter was trained with lora r={saved.r}, alpha={saved.lora_alpha}, "
                       f"targets={sorted(saved.target_modules)}; this recipe has r={ours.r}, alpha={ours.lora_alpha}, "
                       f"targets={sorted(ours.target_modules)}")
    weights = load_file(str(folder / record["adapter"] / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(module.host.language_model,
                                       {k.removeprefix(PEFT_PREFIX): v for k, v in weights.items()})
    if result.unexpected_keys:
        raise LvuError(f"init.export: adapter tensors {result.unexpected_keys[:3]} match no LoRA module here")
