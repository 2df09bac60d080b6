"""Optimiser and learning-rate schedule from an :class:`~lvu.schema.OptimConfig`, shared by every task.

Parameter groups follow the MAE / LLaVA convention: biases, norm weights and other 1-D parameters (plus anything a
module lists in ``no_weight_decay()``) get no weight decay; ``lr_by_prefix``, or a model's per-part rates (FiLA-Video
trains the vision tower, projector and LLM at different rates), give parts of the model their own learning rate.
Frozen parameters are left out. The schedule is one per-step ``LambdaLR``: linear warm-up, then constant / cosine /
linear / exponential decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lvu.errors import ConfigError
from lvu.schema import OptimConfig, OptimizerName, SchedulerConfig, SchedulerName


def _no_decay_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for prefix, module in model.named_modules():
        hook = getattr(module, "no_weight_decay", None)
        if callable(hook):
            names.update(f"{prefix}.{n}" if prefix else n for n in hook())
    return names


@dataclass(frozen=True)
class ParamRate:
    """A trainable parameter's optimiser settings, for models whose parts train at their own rates (host-LM tasks:
    vision encoder, projector, LLM, method)."""

    label: str  # the part it belongs to; groups are named after their parts
    lr: float
    weight_decay: float


Rates = Callable[[str], ParamRate]  # parameter name -> its settings


def parameter_groups(model: nn.Module, cfg: OptimConfig, rates: Rates | None = None) -> list[dict]:
    """Trainable parameters grouped by (learning rate, weight decay), each group named after the parts in it (what
    Lightning's learning-rate monitor logs).

    Args:
        rates: per-parameter (label, lr, weight decay); default ``cfg.lr_by_prefix`` and ``cfg.weight_decay``.
    """
    explicit_no_decay = _no_decay_names(model)
    prefixes = sorted(cfg.lr_by_prefix, key=len, reverse=True)
    groups: dict[tuple[float, float], dict] = {}
    matched_prefixes: set[str] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if rates is not None:
            rate = rates(name)
            label, lr, weight_decay = rate.label, rate.lr, rate.weight_decay
        else:
            prefix = next((p for p in prefixes if name.startswith(p)), None)
            if prefix is not None:
                matched_prefixes.add(prefix)
            label = prefix.rstrip(".") if prefix is not None else "default"
            lr, weight_decay = (cfg.lr_by_prefix[prefix] if prefix is not None else cfg.lr), cfg.weight_decay
        no_decay = param.ndim <= 1 or name.endswith(".bias") or name in explicit_no_decay
        decay = 0.0 if no_decay else weight_decay
        group = groups.setdefault((lr, decay), {"params": [], "lr": lr, "weight_decay": decay, "names": [],
                                                "parts": [], "exempt": False})
        group["params"].append(param)
        group["names"].append(name)
        group["exempt"] |= no_decay and weight_decay > 0
        if label not in group["parts"]:
            group["parts"].append(label)
    unmatched = sorted(set(prefixes) - matched_prefixes)
    if unmatched and rates is None:
        raise ConfigError(f"optim.lr_by_prefix: no trainable parameter starts with {', '.join(map(repr, unmatched))}")
    if not groups:
        raise ConfigError("the model has no trainable parameters; check which parts the recipe freezes")
    for group in groups.values():  # e.g. "vision", "projector+method", "llm/no_decay" (its biases and norms)
        group["name"] = "+".join(group.pop("parts")) + ("/no_decay" if group.pop("exempt") else "")
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig, *, offloaded: bool = False,
                    rates: Rates | None = None) -> torch.optim.Optimizer:
    """The configured optimiser over :func:`parameter_groups`.

    Args:
        offloaded: DeepSpeed keeps optimiser state in CPU memory (ZeRO-Offload); its CPU Adam is then required.
        rates: see :func:`parameter_groups`.
    """
    groups = parameter_groups(model, cfg, rates)
    for group in groups:
        group.pop("names")
    if offloaded:
        if cfg.name == OptimizerName.sgd:
            raise ConfigError("optim.name=sgd cannot be used with DeepSpeed optimizer offloading; use adam or adamw")
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # DeepSpeed takes seconds to import; only offloading needs it

        return DeepSpeedCPUAdam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                adamw_mode=cfg.name == OptimizerName.adamw)
    if cfg.name == OptimizerName.adamw:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == OptimizerName.adam:
        # torch's Adam adds weight_decay as L2 to the gradient; the groups carry it (0 for no-decay parameters).
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def lr_lambda(cfg: SchedulerConfig, total_steps: int, steps_per_epoch: float | None) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Args:
        total_steps: optimiser steps in the whole run (for cosine / linear decay).
        steps_per_epoch: optimiser steps per epoch; needed for ``warmup_epochs`` and the exponential schedule.
    """
    needs_epochs = cfg.warmup_epochs > 0 or cfg.name == SchedulerName.exponential
    if needs_epochs and not steps_per_epoch:
        raise ConfigError(
            "optim.scheduler: the epoch length is unknown (the training loader has no length), so warmup_epochs "
            "and the exponential schedule cannot be used; set optim.scheduler.warmup_steps instead"
        )
    warmup = cfg.warmup_steps + round(cfg.warmup_epochs * (steps_per_epoch or 0))
    decay_steps = max(1, total_steps - warmup)
    floor = cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay_steps)
        if cfg.name == SchedulerName.cosine:
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.name == SchedulerName.linear:
            return floor + (1 - floor) * (1 - progress)
        if cfg.name == SchedulerName.exponential:
            assert steps_per_epoch
            return cfg.gamma ** int(step // steps_per_epoch)
        return 1.0

    return factor


def _optimizer_offloaded(trainer) -> bool:
    config = getattr(trainer.strategy, "config", None) or {}
    offload = config.get("zero_optimization", {}).get("offload_optimizer") or {}
    return offload.get("device", "none") not in (None, "none")


def configure_optimizers(module, cfg: OptimConfig, rates: Rates | None = None) -> dict:
    """What ``LightningModule.configure_optimizers`` returns: the optimiser and a per-step schedule.

    Reads the run length from the trainer, so call it from inside ``configure_optimizers``.
    """
    trainer = module.trainer
    optimizer = build_optimizer(module, cfg, offloaded=_optimizer_offloaded(trainer), rates=rates)
    total = int(trainer.estimated_stepping_batches)  # also sets up the train loader, so its length is known below
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()  # max_epochs unset (-1): Lightning skipped it, epoch-based warm-up needs it
    if cfg.scheduler.total_steps is not None:
        if cfg.scheduler.total_steps <= 0:
            raise ConfigError(f"optim.scheduler.total_steps must be positive, got {cfg.scheduler.total_steps}")
        total = cfg.scheduler.total_steps
    batches = trainer.num_training_batches
    steps_per_epoch = None if math.isinf(batches) else max(1.0, batches / trainer.accumulate_grad_batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.scheduler, total, steps_per_epoch))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
