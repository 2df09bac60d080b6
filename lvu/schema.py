"""Typed schemas for the recipe sections every task shares: trainer, strategy, checkpointing, optimisation.

Recipes are validated against these dataclasses (through OmegaConf structured configs) before any compute, so a
typo or a wrong type fails with the key named. Task-specific sections (``data``, ``model``, ...) are dataclasses
that each task adds to its subclass of :class:`RecipeConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class StrategyName(str, Enum):
    """How work is spread over devices."""

    auto = "auto"
    ddp = "ddp"
    deepspeed = "deepspeed"


# Lightning's precision strings, as member names too, so configs print what users write ("bf16-mixed").
Precision = Enum(
    "Precision", {p: p for p in ("32-true", "bf16-mixed", "16-mixed", "bf16-true")}, type=str, module=__name__
)


class ProgressBar(str, Enum):
    rich = "rich"
    tqdm = "tqdm"
    none = "none"


class MonitorMode(str, Enum):
    min = "min"
    max = "max"


class ClipAlgorithm(str, Enum):
    norm = "norm"
    value = "value"


@dataclass
class StrategyConfig:
    """Distribution strategy. Presets live in ``recipes/trainer/``."""

    name: StrategyName = StrategyName.auto
    # DDP: only needed when some parameters get no gradient in a step.
    find_unused_parameters: bool = False
    # None lets Lightning pick: nccl on GPU, gloo on CPU.
    process_group_backend: str | None = None
    # DeepSpeed ZeRO stage (1, 2 or 3) and offloading; ignored by other strategies.
    stage: int = 2
    offload_optimizer: bool = False
    offload_parameters: bool = False
    # DeepSpeed: leave parameters without gradients out of checkpoints. For models whose frozen part is rebuilt from
    # its own checkpoint at start (LinVT's host): saves shrink from the host's size to the trained part's.
    exclude_frozen_parameters: bool = False
    # A full DeepSpeed config, inline (mapping) or a path to a JSON file; when given it wins over the fields above.
    config: Any = None


@dataclass
class CheckpointConfig:
    """What ModelCheckpoint keeps in ``<run_dir>/checkpoints/``."""

    # Metric that ranks checkpoints (e.g. "val/loss"); None keeps only last.ckpt.
    monitor: str | None = None
    mode: MonitorMode = MonitorMode.min
    save_top_k: int = 1
    save_last: bool = True
    # Also save every N optimiser steps (mid-epoch); None saves at epoch/validation ends only.
    every_n_train_steps: int | None = None
    filename: str = "epoch{epoch:03d}-step{step:07d}"


@dataclass
class PreemptionConfig:
    """Graceful stops on signals (Slurm preemption, ``scancel``, Ctrl-C-like SIGTERM from a scheduler).

    A listed signal is only noted when it arrives; at the next optimiser-step boundary every rank agrees to stop,
    ``last.ckpt`` is written, and the run exits with 128 + the signal number. Under Slurm, ``requeue_signal`` also
    puts the job back in the queue (``scontrol requeue``); the restarted job resumes from that checkpoint.
    """

    enabled: bool = True
    signals: list[str] = field(default_factory=lambda: ["SIGUSR1", "SIGTERM"])
    # The signal Slurm sends ahead of the time limit (``#SBATCH --signal=SIGUSR1@90``); it requeues the job.
    requeue_signal: str = "SIGUSR1"
    requeue: bool = True


@dataclass
class TrainerConfig:
    """Arguments of ``lightning.Trainer`` that recipes may set, plus our loggers, checkpointing and progress bar."""

    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    precision: Precision = Precision["32-true"]
    max_epochs: int | None = None
    max_steps: int = -1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: ClipAlgorithm = ClipAlgorithm.norm
    # int = every N training batches, float = fraction of an epoch; None = once per epoch.
    val_check_interval: int | float | None = None
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    limit_predict_batches: int | float | None = None
    num_sanity_val_steps: int = 2
    log_every_n_steps: int = 50
    deterministic: bool | None = None
    benchmark: bool | None = None
    progress_bar: ProgressBar = ProgressBar.rich
    # Lightning's table of modules and parameter counts at the start of fit.
    enable_model_summary: bool = True
    # Any of "tensorboard", "csv".
    loggers: list[str] = field(default_factory=lambda: ["tensorboard", "csv"])
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # After fit, evaluate the test split with the best checkpoint (checkpoint.monitor), else the last one.
    test_after_fit: bool = False
    preemption: PreemptionConfig = field(default_factory=PreemptionConfig)


class OptimizerName(str, Enum):
    adamw = "adamw"
    adam = "adam"
    sgd = "sgd"


class SchedulerName(str, Enum):
    constant = "constant"
    cosine = "cosine"
    linear = "linear"
    # lr * gamma ** epoch (torch's ExponentialLR stepped once per epoch).
    exponential = "exponential"


@dataclass
class SchedulerConfig:
    """Learning-rate schedule, applied per optimiser step after a linear warm-up."""

    name: SchedulerName = SchedulerName.constant
    warmup_steps: int = 0
    # Warm-up measured in epochs (papers usually state it so); added to warmup_steps.
    warmup_epochs: float = 0.0
    # cosine/linear decay to this fraction of the base learning rate.
    min_lr_ratio: float = 0.0
    # exponential: factor per epoch.
    gamma: float = 0.9
    # Decay horizon in optimiser steps; None = the run's length (max_steps, else max_epochs x steps per epoch).
    # Fix it when a run is trained in pieces with growing max_steps, so every piece follows the same schedule.
    total_steps: int | None = None


@dataclass
class OptimConfig:
    """Optimiser and schedule. Biases, norms and 1-D parameters get no weight decay."""

    name: OptimizerName = OptimizerName.adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9
    # Learning rate per parameter-name prefix, e.g. {"model.projector.": 1e-5}; the longest prefix wins.
    lr_by_prefix: dict[str, float] = field(default_factory=dict)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


@dataclass
class RecipeConfig:
    """Root of every recipe. Each task subclasses it to add its ``data`` and ``model`` sections."""

    # Registered task name, e.g. "lvmae.pretrain" (``lvu tasks`` lists them).
    task: str = MISSING
    # Run name; defaults to the recipe's path under recipes/ (e.g. "lvmae/pretrain").
    name: str = ""
    seed: int = 0
    # Where this run writes; default runs/<name>/<version>/. Pointing it at an existing run resumes that run.
    run_dir: str | None = None
    runs_root: str = "runs"
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


# Recipe sections that may be picked from a folder of presets: ``defaults: [{trainer: cpu}]`` or ``trainer=ddp``
# on the command line loads recipes/trainer/ddp.yaml into the ``trainer`` section.
PRESET_GROUPS: dict[str, type] = {"trainer": TrainerConfig}
