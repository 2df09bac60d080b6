"""Typed schemas for the recipe sections every task shares: trainer, strategy, checkpointing, optimisation.

Recipes are validated against these dataclasses (through OmegaConf structured configs) before any compute, so a
typo or a wrong type fails with the key named. Task-specific sections (``data``, ``model``, ...) are dataclasses
that each task adds to its subclass of :class:`RecipeConfig`.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
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
    auto = "auto"  # rich on a terminal, log lines otherwise (a Slurm .out file, a pipe)
    rich = "rich"
    tqdm = "tqdm"
    log = "log"  # a plain line every trainer.progress_every_n_steps steps or progress_every_seconds seconds
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
    """How work is spread over devices: auto (one device), ddp, or deepspeed."""
    find_unused_parameters: bool = False
    """DDP: only needed when some trainable parameters get no gradient in a step (slower when on)."""
    process_group_backend: str | None = None
    """Collective backend; null lets Lightning pick (nccl on GPU, gloo on CPU)."""
    stage: int = 2
    """DeepSpeed ZeRO stage (1, 2 or 3); ignored by other strategies."""
    offload_optimizer: bool = False
    """DeepSpeed: keep optimiser states in CPU memory (ZeRO-Offload; the optimiser becomes DeepSpeed's CPU Adam)."""
    offload_parameters: bool = False
    """DeepSpeed ZeRO-3: keep parameters in CPU memory between uses."""
    exclude_frozen_parameters: bool = False
    """DeepSpeed: leave parameters without gradients out of checkpoints (a frozen part rebuilt from its own
    checkpoint at start, like a video method's host): saves shrink to the trained part's size."""
    config: Any = None
    """A full DeepSpeed config, inline (mapping) or a path to a JSON file; when given it wins over the fields
    above."""


@dataclass
class CheckpointConfig:
    """What ModelCheckpoint keeps in ``<run_dir>/checkpoints/``."""

    monitor: str | None = None
    """Metric that ranks checkpoints (e.g. "val/loss"); null keeps only last.ckpt."""
    mode: MonitorMode = MonitorMode.min
    """Whether a lower (min) or higher (max) monitored value is better."""
    save_top_k: int = 1
    """How many of the best checkpoints to keep (with a monitor)."""
    save_last: bool = True
    """Keep last.ckpt, the checkpoint a resumed run continues from."""
    every_n_train_steps: int | None = None
    """Also save every N optimiser steps (mid-epoch); null saves at epoch and validation ends only."""
    filename: str = "epoch{epoch:03d}-step{step:07d}"
    """Name pattern of the ranked checkpoints."""


# trainer.loggers names -> the package each needs beyond lvu's requirements (its extra: pip install 'lvu[NAME]').
LOGGERS: dict[str, str | None] = {"tensorboard": None, "csv": None, "wandb": "wandb", "mlflow": "mlflow"}


class WandbMode(str, Enum):
    # Written under <run_dir>/logs/wandb/; `wandb sync` uploads it later (compute nodes often have no internet).
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class WandbConfig:
    """Weights & Biases, when ``trainer.loggers`` lists ``wandb`` (``pip install 'lvu[wandb]'``). Online,
    restarts (resumes, Slurm requeues) continue one W&B run; offline (W&B cannot continue a run there) each start is
    its own W&B run, grouped under the lvu run's id, kept in ``<run_dir>/logs/wandb_run_id``."""

    project: str = "lvu"
    """W&B project."""
    entity: str | None = None
    """Team or user; null: your default entity."""
    mode: WandbMode = WandbMode.offline
    """offline (the default: nothing leaves the machine until `wandb sync`), online, or disabled."""
    tags: list[str] = field(default_factory=list)
    """Tags of the W&B run."""


@dataclass
class MLflowConfig:
    """MLflow, when ``trainer.loggers`` lists ``mlflow`` (``pip install 'lvu[mlflow]'``). One MLflow run per lvu
    run: restarts continue it, its id kept in ``<run_dir>/logs/mlflow_run_id``."""

    tracking_uri: str | None = None
    """A tracking server (http://host:5000) or database URI; null: a SQLite file in <run_dir>/logs/mlflow.db (MLflow
    3 refuses its old ./mlruns folder store)."""
    experiment: str = "lvu"
    """Experiment name (created when missing)."""


@dataclass
class PreemptionConfig:
    """Graceful stops on signals (Slurm preemption, ``scancel``, Ctrl-C-like SIGTERM from a scheduler).

    A listed signal is only noted when it arrives; at the next optimiser-step boundary every rank agrees to stop,
    ``last.ckpt`` is written, and the run exits with code 75 (EX_TEMPFAIL). Under Slurm, ``requeue_signal`` also
    puts the job back in the queue (``scontrol requeue``); the restarted job resumes from that checkpoint.
    """

    enabled: bool = True
    """Stop at the next step boundary with a checkpoint when a listed signal arrives."""
    signals: list[str] = field(default_factory=lambda: ["SIGUSR1", "SIGTERM"])
    """Signals that stop the run gracefully."""
    requeue_signal: str = "SIGUSR1"
    """The signal Slurm sends ahead of the time limit (``#SBATCH --signal=SIGUSR1@90``); it requeues the job."""
    requeue: bool = True
    """Under Slurm, put the job back in the queue after a stop by requeue_signal."""


@dataclass
class TrainerConfig:
    """Arguments of ``lightning.Trainer`` that recipes may set, plus our loggers, checkpointing and progress bar."""

    accelerator: str = "auto"
    """cpu, gpu or auto (a GPU when there is one)."""
    devices: int | str = "auto"
    """Devices (processes) per node; auto takes all of them (or the Slurm job's tasks per node)."""
    num_nodes: int = 1
    """Nodes of the job."""
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    """How work is spread over devices."""
    precision: Precision = Precision["32-true"]
    """Numeric precision: 32-true, bf16-mixed, 16-mixed or bf16-true."""
    max_epochs: int | None = None
    """Stop after this many epochs (null: no epoch limit)."""
    max_steps: int = -1
    """Stop after this many optimiser steps (-1: no step limit)."""
    accumulate_grad_batches: int = 1
    """Batches whose gradients add up to one optimiser step."""
    gradient_clip_val: float | None = None
    """Clip gradients to this norm (or value); null does not clip."""
    gradient_clip_algorithm: ClipAlgorithm = ClipAlgorithm.norm
    """Clip by the global norm or by value."""
    val_check_interval: int | float | None = None
    """Validate every N training batches (int) or fraction of an epoch (float); null once per epoch."""
    check_val_every_n_epoch: int | None = 1
    """Validate every N epochs (null: only by val_check_interval)."""
    limit_train_batches: int | float | None = None
    """Use only this many training batches (int) or this fraction of them (float) per epoch; null: all."""
    limit_val_batches: int | float | None = None
    """Validation batches per validation, as for limit_train_batches."""
    limit_test_batches: int | float | None = None
    """Test batches, as for limit_train_batches."""
    limit_predict_batches: int | float | None = None
    """Prediction batches, as for limit_train_batches."""
    num_sanity_val_steps: int = 2
    """Validation batches run before training, to fail fast on a broken validation step."""
    log_every_n_steps: int = 50
    """Write training metrics every N steps."""
    deterministic: bool | None = None
    """Ask torch for deterministic algorithms (slower on GPUs); null leaves torch's defaults."""
    benchmark: bool | None = None
    """cuDNN autotuning of convolution algorithms; null leaves Lightning's default."""
    threads: int | None = None
    """torch's intra-op CPU threads in each training process (``torch.set_num_threads``); null leaves torch's default
    (one per core). Tiny models on a few shared cores run faster on 1: their steps are too small to split."""
    progress_bar: ProgressBar = ProgressBar.auto
    """auto (rich on a terminal, log lines when the output is a file or a pipe), rich, tqdm, log or none. Rich and
    tqdm redraw one line, which a redirected log (a Slurm .out file) shows only at the end."""
    progress_every_n_steps: int = 50
    """progress_bar=log: a line every this many training steps..."""
    progress_every_seconds: float = 60.0
    """...or after this many seconds, whichever comes first."""
    enable_model_summary: bool = True
    """Print Lightning's table of modules and parameter counts at the start of fit."""
    loggers: list[str] = field(default_factory=lambda: ["tensorboard", "csv"])
    """Any of "tensorboard", "csv" (written under <run_dir>/logs/), "wandb", "mlflow" (see below)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases settings (used when loggers lists wandb)."""
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    """MLflow settings (used when loggers lists mlflow)."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """What is kept in <run_dir>/checkpoints/."""
    test_after_fit: bool = False
    """After fit, evaluate the test split with the best checkpoint (checkpoint.monitor), else the last one."""
    preemption: PreemptionConfig = field(default_factory=PreemptionConfig)
    """Graceful stops on signals."""


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
    """constant, cosine, linear (decay to min_lr_ratio after warm-up) or exponential (gamma per epoch)."""
    warmup_steps: int = 0
    """Optimiser steps of linear warm-up from 0."""
    warmup_epochs: float = 0.0
    """Warm-up measured in epochs (papers usually state it so); added to warmup_steps."""
    min_lr_ratio: float = 0.0
    """cosine/linear: decay to this fraction of the base learning rate."""
    gamma: float = 0.9
    """exponential: factor per epoch."""
    total_steps: int | None = None
    """Decay horizon in optimiser steps; null = the run's length (max_steps, else max_epochs x steps per epoch).
    Fix it when a run is trained in pieces with growing max_steps, so every piece follows the same schedule."""


@dataclass
class OptimConfig:
    """Optimiser and schedule. Biases, norms and 1-D parameters get no weight decay."""

    name: OptimizerName = OptimizerName.adamw
    """adamw, adam or sgd."""
    lr: float = 1e-3
    """Base learning rate (parts of a model may have their own)."""
    weight_decay: float = 0.0
    """Weight decay of matrices (never of biases, norms or other 1-D parameters)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam's (beta1, beta2)."""
    eps: float = 1e-8
    """Adam's epsilon."""
    momentum: float = 0.9
    """SGD's momentum."""
    lr_by_prefix: dict[str, float] = field(default_factory=dict)
    """Learning rate per parameter-name prefix, e.g. {"model.projector.": 1e-5}; the longest prefix wins."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """The learning-rate schedule."""


@dataclass
class RecipeConfig:
    """Root of every recipe. Each task subclasses it to add its ``data`` and ``model`` sections."""

    task: str = MISSING
    """Registered task name, e.g. "lvmae.pretrain" (``lvu tasks`` lists them)."""
    name: str = ""
    """Run name; defaults to the recipe's path under recipes/ (e.g. "lvmae/pretrain")."""
    seed: int = 0
    """Seeds everything random: weights, data order, augmentation, data-loader workers."""
    run_dir: str | None = None
    """Where this run writes; default runs/<name>/<version>/. Pointing it at an existing run resumes that run."""
    runs_root: str = "runs"
    """Folder under which runs/<name>/<version>/ are made."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """The Lightning trainer, strategy, checkpointing and logging."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and learning-rate schedule."""


def schema_name(key: str) -> str:
    """The dataclass field of recipe key ``key`` (``from`` -> ``from_``: dataclasses cannot have keyword fields)."""
    return f"{key}_" if keyword.iskeyword(key) else key


def user_name(key: str) -> str:
    """The recipe key of dataclass field ``key`` (``from_`` -> ``from``)."""
    return key[:-1] if key.endswith("_") and keyword.iskeyword(key[:-1]) else key


def user_dotted(key: str) -> str:
    return ".".join(user_name(part) for part in key.split("."))


def renamed(tree: Any, rename: Callable[[str], str]) -> Any:
    """A plain config tree with every mapping key passed through ``rename``."""
    if isinstance(tree, dict):
        return {rename(k) if isinstance(k, str) else k: renamed(v, rename) for k, v in tree.items()}
    if isinstance(tree, list):
        return [renamed(v, rename) for v in tree]
    return tree


def user_keys(tree: Any) -> Any:
    """A plain config tree with schema field names turned back into recipe keys (``from_`` -> ``from``)."""
    return renamed(tree, user_name)



class Benchmark(str, Enum):
    """The benchmarks ``lvu eval`` scores (``lvu data pack --format NAME`` makes their shards)."""

    videomme = "videomme"
    mlvu = "mlvu"
    longvideobench = "longvideobench"
    lvbench = "lvbench"
    mvbench = "mvbench"
    egoschema = "egoschema"
    nextqa = "nextqa"
    perceptiontest = "perceptiontest"
    ego4d_nlq = "ego4d_nlq"


class AnswerMode(str, Enum):
    """How a multiple-choice question is answered."""

    generate = "generate"  # greedy text, the letter read out of it (the benchmarks' standard protocol)
    likelihood = "likelihood"  # the option whose continuation the model finds most likely (nothing to parse)


class LikelihoodTarget(str, Enum):
    """What is scored in likelihood mode, after the prompt's assistant turn opens."""

    letter = "letter"  # the option's letter alone ("B"), which the prompts ask for
    option = "option"  # the letter and the option's text ("B. a red car")


@dataclass
class EvalConfig:
    """Scoring a video-LLM on a benchmark with ``lvu eval`` (presets in ``recipes/eval/``: ``eval=videomme``)."""

    benchmark: Benchmark | None = None
    """Which benchmark the data.predict shards hold (null: not an evaluation); it picks the prompt and the scorer."""
    mode: AnswerMode = AnswerMode.generate
    """generate (greedy, the letter read from the text) or likelihood (the most likely option; multiple choice
    only)."""
    likelihood_target: LikelihoodTarget = LikelihoodTarget.letter
    """Likelihood mode: score the letter alone, or the letter with the option's text."""
    max_new_tokens: int = 16
    """Generate mode: the longest answer (the benchmarks' protocol: 16)."""
    questions_per_call: int = 8
    """A video's questions asked together in one call (LVBench has ~15 a video): memory grows with it, each row
    holding the video's tokens. Answers do not depend on the ranks, but may differ in the last digits with it."""
    subtitles: bool = False
    """Put the subtitles spoken at the sampled frames' times in the prompt (Video-MME "w/ subs", LongVideoBench);
    the shards must have been packed with --subtitles."""
    headline: str = "accuracy"
    """The metric the summary line reports (MLVU reports "mean": the mean of its task accuracies)."""
    papers: dict[str, dict[str, float]] = field(default_factory=dict)
    """Published results to print beside ours, in percent: {"FiLA-Video-7B (FiLA Tab. 1)": {"accuracy": 62.3}}."""


# Recipe sections that may be picked from a folder of presets: ``defaults: [{trainer: cpu}]`` or ``trainer=ddp``
# on the command line loads recipes/trainer/ddp.yaml into the ``trainer`` section.
# ``eval=videomme`` picks recipes/eval/videomme.yaml (tasks whose recipes have an ``eval`` section: video-LLMs).
PRESET_GROUPS: dict[str, type] = {"trainer": TrainerConfig, "eval": EvalConfig}
