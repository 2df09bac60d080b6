"""Builds a ``lightning.Trainer`` from a recipe's ``trainer`` section and a run directory."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    LearningRateMonitor,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from lvu import early_signals
from lvu.errors import ConfigError
from lvu.schema import MLflowConfig, ProgressBar, TrainerConfig, WandbConfig, WandbMode
from lvu.train.callbacks import (
    DataHealth,
    JsonlPredictionWriter,
    LvuModelCheckpoint,
    RestoreLoaderPosition,
    RngStates,
    RunInfo,
)
from lvu.train.checkpointing import AtomicCheckpointIO
from lvu.train.preemption import PreemptionHandler
from lvu.train.progress import LogLines
from lvu.train.rundir import checkpoint_dir, global_rank
from lvu.train.strategies import build_strategy


def build_loggers(cfg: TrainerConfig, run_dir: Path) -> list[Logger]:
    """The loggers ``cfg.loggers`` names (names and packages were checked before the run started)."""
    loggers: list[Logger] = []
    if "tensorboard" in cfg.loggers:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="logs", version="tensorboard"))
    if "csv" in cfg.loggers:
        # One CSV per (re)start: logs/csv/version_N/metrics.csv. Lightning's CSVLogger deletes an existing
        # metrics.csv in its folder, which would erase the history of a resumed run.
        loggers.append(CSVLogger(save_dir=str(run_dir / "logs"), name="csv"))
    if "wandb" in cfg.loggers:
        loggers.append(_wandb_logger(cfg.wandb, run_dir))
    if "mlflow" in cfg.loggers:
        loggers.append(_mlflow_logger(cfg.mlflow, run_dir))
    return loggers


def close_loggers(trainer: L.Trainer, error: BaseException | None) -> None:
    """End the W&B run of this lvu run, with the run's outcome (a stop by a signal gives its exit code, 75). Lightning
    leaves it open, and the next run in the same process (a probe's sub-run, a quickstart step) would log into it
    instead of starting its own. A failure to close it (online, the network) is a warning, not a new error that
    would hide the run's own."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
            code = 0 if error is None else int(getattr(error, "exit_code", 1))
            try:
                logger.experiment.finish(exit_code=code)
            except Exception as exc:  # see the docstring
                rank_zero_warn(f"could not close the W&B run: {exc}")


class OtherRankLogger(Logger):
    """What ranks other than 0 hold in place of a tracker logger (W&B, MLflow). Lightning logs from rank 0 only;
    building the real logger on every rank would, under srun (all ranks start at once), race to create the
    tracker's store (MLflow's SQLite file) and its run. Every rank keeps a logger list of the same shape
    (LearningRateMonitor, for one, needs a logger on every rank)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def _run_label(run_dir: Path) -> str:
    return "/".join(run_dir.parts[-3:])  # e.g. lvmae/pretrain/version_2, or .../slurm-4242


def _kept_run_id(record: Path) -> str | None:
    """The tracker run this lvu run logs to, once one was made (so a resume or requeue continues it)."""
    kept = record.read_text().strip() if record.is_file() else ""
    return kept or None


def _keep_run_id(record: Path, run_id: str) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(f".{record.name}.partial")
    partial.write_text(run_id + "\n")
    os.replace(partial, record)  # never an empty record, which would name no run on every restart


def _wandb_logger(cfg: WandbConfig, run_dir: Path) -> Logger:
    if global_rank() != 0:
        return OtherRankLogger("wandb")
    record = run_dir / "logs" / "wandb_run_id"
    run_id = _kept_run_id(record)
    if run_id is None:
        run_id = uuid.uuid4().hex[:16]
        _keep_run_id(record, run_id)
    # W&B continues a run by id only online: offline it ignores `resume`, and two local runs with one id clash on
    # `wandb sync` (wandb/wandb#4624). Offline, each start is its own W&B run, grouped under this lvu run's id.
    online = cfg.mode == WandbMode.online
    return WandbLogger(project=cfg.project, entity=cfg.entity, name=_run_label(run_dir), group=run_id,
                       id=run_id if online else None, resume="allow" if online else None,
                       save_dir=str(run_dir / "logs"), mode=cfg.mode.value, tags=list(cfg.tags), log_model=False)


class RestartableMLFlowLogger(MLFlowLogger):
    """MLflow refuses to change a parameter once logged, so a restart whose recipe differs (a larger
    ``trainer.max_steps`` to train on) would fail at its first log. Parameters already in the run stay; new ones are
    added; changed ones are recorded as tags ``restart/<key>`` (tags may change) with the newest value."""

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Any) -> None:
        # Flattened and cut as Lightning's MLFlowLogger does, so the keys and values compare with what it logged.
        flat = {key: str(value)[:250] for key, value in _flatten_dict(_convert_params(params)).items()}
        logged = self.experiment.get_run(self.run_id).data.params
        new = {key: value for key, value in flat.items() if key not in logged}
        if new:
            super().log_hyperparams(new)
        for key, value in flat.items():
            if key in logged and logged[key] != value:
                self.experiment.set_tag(self.run_id, f"restart/{key}", value)


def _mlflow_logger(cfg: MLflowConfig, run_dir: Path) -> Logger:
    if global_rank() != 0:
        return OtherRankLogger("mlflow")
    record = run_dir / "logs" / "mlflow_run_id"
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    uri = cfg.tracking_uri or f"sqlite:///{(run_dir / 'logs' / 'mlflow.db').resolve()}"
    kept = _kept_run_id(record)
    logger = RestartableMLFlowLogger(experiment_name=cfg.experiment, tracking_uri=uri,
                                     run_name=_run_label(run_dir), run_id=kept)
    if kept is None:
        _keep_run_id(record, logger.run_id)  # reading run_id creates the MLflow run now, so restarts can continue it
    return logger


def build_callbacks(cfg: TrainerConfig, run_dir: Path, stage: str, run_info: RunInfo,
                    predictions: Path | None, extra: Sequence[Callback] = ()) -> list[Callback]:
    """The stage's callbacks, then ``extra``; a prediction writer among ``extra`` replaces the JSON-lines one."""
    callbacks: list[Callback] = [run_info]
    bar = ProgressBar(cfg.progress_bar)
    if bar == ProgressBar.auto:
        bar = ProgressBar.rich if sys.stderr.isatty() else ProgressBar.log
    if bar == ProgressBar.rich:
        callbacks.append(RichProgressBar())
    elif bar == ProgressBar.tqdm:
        callbacks.append(TQDMProgressBar())
    elif bar == ProgressBar.log:
        callbacks.append(LogLines(cfg.progress_every_n_steps, cfg.progress_every_seconds))
    if stage == "fit":
        callbacks += [DataHealth(), RngStates(), RestoreLoaderPosition()]
        if cfg.preemption.enabled:
            callbacks.append(PreemptionHandler(cfg.preemption))
        else:
            early_signals.release()
        ck = cfg.checkpoint
        callbacks.append(
            LvuModelCheckpoint(
                dirpath=str(checkpoint_dir(run_dir)),
                filename=ck.filename,
                monitor=ck.monitor,
                mode=ck.mode.value,
                # Without a metric there is no "best": keep last.ckpt only.
                save_top_k=ck.save_top_k if ck.monitor else 0,
                save_last=ck.save_last,
                every_n_train_steps=ck.every_n_train_steps,
                auto_insert_metric_name=False,
            )
        )
        if cfg.loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
    own_writer = any(isinstance(c, BasePredictionWriter) for c in extra)
    if stage == "predict" and predictions is not None and not own_writer:
        callbacks.append(JsonlPredictionWriter(predictions))
    callbacks += extra
    if stage == "predict" and own_writer and cfg.preemption.enabled:
        # After the writer: a signal stops every rank once the batch's answers are on disk (lvu eval resumes there).
        callbacks.append(PreemptionHandler(cfg.preemption))
    elif stage == "predict" and own_writer:
        early_signals.release()
    return callbacks


def trainer_kwargs(cfg: TrainerConfig) -> dict[str, Any]:
    """The plain ``lightning.Trainer`` arguments (strategy, callbacks and loggers are added by build_trainer)."""
    kwargs: dict[str, Any] = {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "num_nodes": cfg.num_nodes,
        "precision": cfg.precision.value,
        "max_epochs": cfg.max_epochs,
        "max_steps": cfg.max_steps,
        "accumulate_grad_batches": cfg.accumulate_grad_batches,
        "gradient_clip_val": cfg.gradient_clip_val,
        "gradient_clip_algorithm": cfg.gradient_clip_algorithm.value,
        "val_check_interval": cfg.val_check_interval,
        "check_val_every_n_epoch": cfg.check_val_every_n_epoch,
        "num_sanity_val_steps": cfg.num_sanity_val_steps,
        "log_every_n_steps": cfg.log_every_n_steps,
        "deterministic": cfg.deterministic,
        "benchmark": cfg.benchmark,
        "enable_progress_bar": cfg.progress_bar != ProgressBar.none,
        "enable_model_summary": cfg.enable_model_summary,
    }
    for split in ("train", "val", "test", "predict"):
        value = getattr(cfg, f"limit_{split}_batches")
        if value is not None:
            kwargs[f"limit_{split}_batches"] = value
    return kwargs


def build_plugins(cfg: TrainerConfig) -> list[Any]:
    """Atomic checkpoint files; under Slurm, Lightning's cluster environment with its own requeue handler off
    (PreemptionHandler stops at a step boundary instead of saving from inside the signal handler)."""
    plugins: list[Any] = [] if cfg.strategy.name.value == "deepspeed" else [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=not cfg.preemption.enabled))
    return plugins


def slurm_shape(cfg: TrainerConfig) -> dict[str, Any]:
    """Under an ``srun`` launch: ``devices``/``num_nodes`` checked against the job's tasks per node and nodes
    (``auto`` takes the job's), so a mismatch fails here, in one line, before any process group is set up."""
    if not SLURMEnvironment.detect():
        return {}
    tasks, nodes = os.environ.get("SLURM_NTASKS_PER_NODE"), os.environ.get("SLURM_NNODES")
    shape: dict[str, Any] = {}
    if tasks is not None:
        devices = cfg.devices
        if devices in ("auto", -1, "-1"):
            shape["devices"] = int(tasks)
        elif str(devices) != tasks:
            raise ConfigError(f"trainer.devices={devices} but this Slurm job runs --ntasks-per-node={tasks}: Slurm "
                              f"starts one task per device, so set trainer.devices={tasks} (or resubmit with "
                              f"--ntasks-per-node={devices})")
    if nodes is not None and int(nodes) != cfg.num_nodes:
        raise ConfigError(f"trainer.num_nodes={cfg.num_nodes} but this Slurm job has --nodes={nodes}: set "
                          f"trainer.num_nodes={nodes}")
    return shape


def build_trainer(cfg: TrainerConfig, run_dir: Path, stage: str, run_info: RunInfo,
                  predictions: Path | None = None, extra_callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """The trainer for one stage (``fit``, ``validate``, ``test`` or ``predict``) writing under ``run_dir``."""
    return L.Trainer(
        plugins=build_plugins(cfg) or None,
        **{**trainer_kwargs(cfg), **slurm_shape(cfg)},
        strategy=build_strategy(cfg.strategy, cfg.accelerator, stage),
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir) or False,
        callbacks=build_callbacks(cfg, run_dir, stage, run_info, predictions, extra_callbacks),
        enable_checkpointing=stage == "fit",
    )
