"""Lightning strategies from the ``trainer.strategy`` section (presets in recipes/trainer/)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import OmegaConf

from lvu.errors import ConfigError, LvuError
from lvu.schema import StrategyConfig, StrategyName
from lvu.train.checkpointing import save_deepspeed_atomically
from lvu.train.universal import convert_to_universal, deepspeed_world_size, universal_path


def deepspeed_config(cfg: StrategyConfig) -> dict[str, Any] | None:
    """The explicit DeepSpeed config (inline mapping or JSON file), or None to build it from stage/offload."""
    if cfg.config is None:
        return None
    if isinstance(cfg.config, str):
        path = Path(cfg.config)
        if not path.is_file():
            raise ConfigError(f"trainer.strategy.config: DeepSpeed config file {path} not found")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"trainer.strategy.config: {path} is not valid JSON ({exc})") from None
    if OmegaConf.is_config(cfg.config):
        return OmegaConf.to_container(cfg.config, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg.config, dict):
        return cfg.config
    raise ConfigError("trainer.strategy.config: expected a mapping or a path to a DeepSpeed JSON file")


class LvuDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeedStrategy with crash-safe saves.

    Stock Lightning writes every save into the same folder in place (tag ``checkpoint``), so a kill during a save
    destroys the only copy of ``last.ckpt``. Saves go to a partial folder that is swapped in once every rank has
    written (lvu.train.checkpointing). Training itself is unchanged.
    """

    def setup(self, trainer: Any) -> None:
        register_external_parameters(trainer.lightning_module)
        super().setup(trainer)

    def save_checkpoint(self, checkpoint: dict, filepath: Any, storage_options: Any | None = None) -> None:
        save_deepspeed_atomically(self, lambda ckpt, path: super(LvuDeepSpeedStrategy, self).save_checkpoint(
            ckpt, path, storage_options), checkpoint, filepath)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Resume on another world size through a DeepSpeed universal checkpoint (converted once, kept beside the
        original), since ZeRO's optimiser shards are partitioned for the world size that wrote them."""
        path = Path(checkpoint_path)
        saved = deepspeed_world_size(path) if path.is_dir() else None
        if (path / "latest_universal").is_file():  # made by `lvu ckpt universal`
            self.deepspeed_engine._config.load_universal_checkpoint = True
        elif saved is not None and saved != self.world_size:
            rank_zero_info(f"{path} was written by {saved} ranks and this run has {self.world_size}: loading it "
                           f"through a DeepSpeed universal checkpoint")
            universal = universal_path(path)
            error = None
            if self.is_global_zero:
                try:
                    convert_to_universal(path, universal)
                except Exception as exc:  # every rank must learn of it, or the others wait forever
                    error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, LvuError) else str(exc)
            error = self.broadcast(error)
            if error:
                raise LvuError(error)
            self.deepspeed_engine._config.load_universal_checkpoint = True
            path = universal
        zero_optimizer = self.deepspeed_engine.optimizer
        settings = _group_settings(zero_optimizer)
        client_state = super().load_checkpoint(path, weights_only)
        if self.deepspeed_engine._config.load_universal_checkpoint:
            _unshare_adam_steps(zero_optimizer)
            _restore_group_settings(zero_optimizer, settings)
        return client_state


def register_external_parameters(module: torch.nn.Module) -> None:
    """Tell ZeRO-3 about parameters read outside their owner's forward: every submodule's ``external`` list (see
    lvu.models.vlm.base.ParameterUser) is gathered around that submodule's forward."""
    users = [(m, p) for m in module.modules() for p in getattr(m, "external", ())]
    if users:
        import deepspeed  # DeepSpeed strategies only, and it takes seconds to import

        for user, parameter in users:
            deepspeed.zero.register_external_parameter(user, parameter)


def _group_settings(zero_optimizer: Any) -> list[dict[str, Any]]:
    """Every parameter group's settings but its parameters (learning rate, weight decay, name, betas, ...)."""
    inner = getattr(zero_optimizer, "optimizer", None)
    return [{k: v for k, v in group.items() if k != "params"} for group in getattr(inner, "param_groups", [])]


def _restore_group_settings(zero_optimizer: Any, before: list[dict[str, Any]]) -> None:
    """DeepSpeed 0.19's ZeRO-3 universal loading copies the *first* parameter group's settings onto every group, so
    after a resume on another world size the no-decay group would decay and every part of a model would train at
    the first part's learning rate. Give each group its own settings back (as built from the recipe), with the
    learning rate at the restored point of the schedule: one LambdaLR factor scales every group's base rate
    (lvu.tasks.optim), and group 0's restored rate says which factor."""
    inner = getattr(zero_optimizer, "optimizer", None)
    groups = getattr(inner, "param_groups", [])
    if len(groups) != len(before) or not groups:
        return
    base = before[0].get("initial_lr", before[0].get("lr"))
    factor = groups[0]["lr"] / base if base else 1.0
    for group, settings in zip(groups, before, strict=True):
        group.update(settings)
        group["lr"] = settings.get("initial_lr", settings.get("lr")) * factor


def _unshare_adam_steps(zero_optimizer: Any) -> None:
    """DeepSpeed 0.19's ZeRO-3 universal loading gives every parameter group the *same* ``step`` tensor; each
    group's Adam update then advances it, so with two groups (decay, no decay) Adam's bias correction runs at twice
    the real step count. Give each group its own copy."""
    inner = getattr(zero_optimizer, "optimizer", None)
    for state in getattr(inner, "state", {}).values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


class CPUDeepSpeedStrategy(LvuDeepSpeedStrategy):
    """DeepSpeed ZeRO across CPU processes (gloo), for debugging and tests on machines without GPUs.

    Lightning's DeepSpeedStrategy refuses any accelerator but CUDA, although DeepSpeed itself runs on CPU
    (``DS_ACCELERATOR=cpu``). This subclass only removes the CUDA assumptions: the accelerator check, the CUDA
    device-index validation, and a CUDA root device. On GPUs the stock strategy is used, unchanged.
    """

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # skips DeepSpeedStrategy's "CUDA only" check

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self) -> torch.device:
        # DeepSpeed reads the device index as the local rank, so the CPU device carries one.
        return torch.device("cpu", self.local_rank)


def _runs_on_cpu(accelerator: str) -> bool:
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def build_strategy(cfg: StrategyConfig, accelerator: str = "auto", stage: str = "fit") -> Strategy | str:
    """The trainer's strategy. ``stage``: outside ``fit`` DeepSpeed is told its (throughput-logging) batch size,
    which Lightning otherwise reads from the training loader, so that an evaluation needs no training data."""
    if cfg.name == StrategyName.auto:
        return "auto"
    if cfg.name == StrategyName.ddp:
        return DDPStrategy(
            find_unused_parameters=cfg.find_unused_parameters, process_group_backend=cfg.process_group_backend
        )
    if cfg.stage not in (1, 2, 3):
        raise ConfigError(f"trainer.strategy.stage: DeepSpeed ZeRO stage must be 1, 2 or 3, got {cfg.stage}")
    strategy_class: type[DeepSpeedStrategy] = LvuDeepSpeedStrategy
    if _runs_on_cpu(accelerator):
        # Must be set before DeepSpeed picks its accelerator (it would otherwise probe for CUDA and warn).
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        strategy_class = CPUDeepSpeedStrategy
    return strategy_class(
        config=deepspeed_config(cfg),
        stage=cfg.stage,
        offload_optimizer=cfg.offload_optimizer,
        offload_parameters=cfg.offload_parameters,
        process_group_backend=cfg.process_group_backend,
        exclude_frozen_parameters=cfg.exclude_frozen_parameters,
        **({"logging_batch_size_per_gpu": 1} if stage != "fit" else {}),
    )
