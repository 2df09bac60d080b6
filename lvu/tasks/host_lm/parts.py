"""Which parts of a host-LM task train, and what follows from it: gradients, LoRA adapters, train/eval mode,
learning-rate groups and what checkpoints keep.

Every tensor of the task belongs to one part: the host's ``vision``, ``projector`` or ``llm`` (by the host's
:attr:`~lvu.models.vlm.Host.part_paths`), or ``method`` (the method's modules and loss parameters, everything outside
the host). A part is ``frozen`` (no gradient, eval mode, never saved: it is rebuilt from ``host.path`` or
``init.from`` at every start), ``full`` (trains and is saved) or ``lora`` (peft adapters train and are saved; the
weights under them are frozen, in eval mode, and rebuilt like a frozen part's).
"""

from __future__ import annotations

import logging

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from lvu.errors import LvuError
from lvu.models.vlm import Host
from lvu.tasks.host_lm.config import LoraSection, PartConfig, PartMode, PartsConfig
from lvu.tasks.optim import ParamRate

log = logging.getLogger(__name__)

HOST_PREFIX = "host."
LORA_MARK = "lora_"  # peft names every adapter tensor lora_A / lora_B / lora_embedding_...
METHOD = "method"


def lora_config(lora: LoraSection) -> LoraConfig:
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.targets))


def is_lora(name: str) -> bool:
    return LORA_MARK in name


def base_name(name: str) -> str:
    """A tensor's name without peft's wrapping (``q_proj.base_layer.weight`` -> ``q_proj.weight``): what a checkpoint
    of the same model trained without LoRA calls it."""
    return name.replace(".base_layer.", ".")


class PartPlan:
    """The per-part training modes of one task module.

    Args:
        host: the task's host (the module's ``host`` attribute).
        parts: the recipe's ``parts`` section.
        lora: the recipe's ``lora`` section (for parts in lora mode).
    """

    def __init__(self, host: Host, parts: PartsConfig, lora: LoraSection, frame_size: int) -> None:
        self.host, self.parts, self.lora, self.frame_size = host, parts, lora, frame_size
        self.frozen_always: set[str] = set()  # host parameters that never reach the LLM, kept frozen when training
        self._unreachable: set[str] | None = None

    def unreachable(self) -> set[str]:
        """Host parameters (task names) that never reach the LLM (found once, by a backward pass)."""
        if self._unreachable is None:
            self._unreachable = {HOST_PREFIX + n for n in self.host.unreachable_parameters(self.frame_size)}
        return self._unreachable

    def config(self, part: str) -> PartConfig:
        return getattr(self.parts, part)

    def mode(self, part: str) -> PartMode:
        return PartMode(self.config(part).mode)

    def part_of(self, name: str) -> str:
        """The part of a task tensor name (``host.model.model.vision_tower...`` -> vision; ``linvt.x`` -> method)."""
        if name.startswith(HOST_PREFIX):
            return self.host.part_of(base_name(name.removeprefix(HOST_PREFIX)))
        return METHOD

    def trained(self) -> list[str]:
        return [p for p in ("vision", "projector", "llm", METHOD) if self.mode(p) != PartMode.frozen]

    # -- applying the plan ------------------------------------------------------------------------------------------

    def inject_lora(self, module: nn.Module, method_modules: dict[str, nn.Module]) -> None:
        """Add adapters to every part in lora mode (before weights are loaded and gradients are set)."""
        config = lora_config(self.lora)
        for part in ("vision", "projector", "llm", METHOD):
            if self.mode(part) != PartMode.lora:
                continue
            targets = (method_modules.items() if part == METHOD else
                       [(f"{HOST_PREFIX}{path}", m) for path, m in self.host.part_modules(part)])
            adapted = []
            for path, target in targets:
                try:
                    inject_adapter_in_model(config, target)
                    adapted.append(path)
                except ValueError:  # peft: none of the target names is in this module
                    continue
            if not adapted:
                raise LvuError(f"lora.targets {list(self.lora.targets)} match no module of the {part} part "
                               f"(parts.{part}.mode=lora); name linear layers it has")

    def set_trainable(self, module: nn.Module) -> None:
        """``requires_grad`` of every parameter as its part's mode says."""
        if any(self.mode(p) != PartMode.frozen for p in ("vision", "projector")):
            self.frozen_always = self.unreachable()
            if self.frozen_always:
                log.info("%d vision/projector parameters never reach the LLM and stay frozen (e.g. %s)",
                         len(self.frozen_always), sorted(self.frozen_always)[0])
        for name, param in module.named_parameters():
            mode = self.mode(self.part_of(name))
            trains = mode == PartMode.full or (mode == PartMode.lora and is_lora(name))
            param.requires_grad_(trains and name not in self.frozen_always)

    def set_modes(self, module: nn.Module, training: bool) -> None:
        """Frozen parts and the weights under adapters stay in eval mode (no dropout) while the task trains; the
        adapters' own dropout trains."""
        # Containers of several parts (the host, the family model around its towers) are in eval mode unless a
        # host part trains in full: their own flags gate behaviour such as gradient checkpointing.
        host_trains = any(self.mode(p) == PartMode.full for p in ("vision", "projector", "llm"))
        for name, sub in module.named_modules():
            if not name:
                continue
            part = self._module_part(name)
            if part is None:
                if not host_trains:
                    sub.train(False)
                continue
            mode = self.mode(part)
            if mode == PartMode.frozen or (mode == PartMode.lora and not is_lora(name)):
                sub.train(False)
        if training:
            for name, sub in module.named_modules():
                if "lora_dropout" in name and self._module_part(name) is not None:
                    sub.train(True)

    def _module_part(self, name: str) -> str | None:
        """The part of a submodule, or None for containers that hold several parts (the host itself)."""
        if name == "host":
            return None
        if not name.startswith(HOST_PREFIX):
            return METHOD
        try:
            return self.host.part_of(base_name(name.removeprefix(HOST_PREFIX)))
        except LvuError:
            return None

    # -- what follows from it ----------------------------------------------------------------------------------------

    def saved(self, name: str) -> bool:
        """Whether checkpoints keep the tensor ``name``: what trains (of a lora part its adapters; not the weights
        of a fully trained part that never reach the LLM)."""
        if name in self.frozen_always:
            return False
        mode = self.mode(self.part_of(name))
        return mode == PartMode.full or (mode == PartMode.lora and is_lora(name))

    def rate(self, name: str, default_lr: float, default_weight_decay: float) -> ParamRate:
        """A trainable parameter's learning rate and weight decay: its part's, else the optimiser's."""
        part = self.part_of(name)
        cfg = self.config(part)
        return ParamRate(part, cfg.lr if cfg.lr is not None else default_lr,
                         cfg.weight_decay if cfg.weight_decay is not None else default_weight_decay)
