"""Callbacks that every lvu run gets from the trainer assembly."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lvu import __version__
from lvu.ckpt import RECORD_KEY
from lvu.errors import LvuError
from lvu.tasks.registry import same_task

BEST_RECORD = "best.json"


def config_digest(config: dict[str, Any]) -> str:
    """A short stable hash of a resolved config (run_dir excluded: moving a run must not change it)."""
    payload = {k: v for k, v in config.items() if k != "run_dir"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunInfo(Callback):
    """Stores what produced a checkpoint (task, recipe, resolved config) and refuses to resume another task's.

    The record sits under ``checkpoint["lvu"]`` so ``lvu ckpt inspect`` can answer without building a model.
    """

    def __init__(self, task: str, recipe_name: str, config: dict[str, Any]) -> None:
        self.task = task
        self.recipe_name = recipe_name
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[RECORD_KEY] = {
            "lvu_version": __version__,
            "task": self.task,
            "recipe": self.recipe_name,
            "config": self.config,
            "config_digest": config_digest(self.config),
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "torch_version": str(torch.__version__),
        }

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The resolved recipe as the run's hyper-parameters (TensorBoard's HPARAMS tab, the CSV logger's
        ``hparams.yaml``): the modules keep no ``save_hyperparameters`` of their own, so loggers had ``{}``."""
        for logger in trainer.loggers:
            logger.log_hyperparams({"task": self.task, "recipe": self.recipe_name, **self.config})

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Where training really starts, after any restore: a Slurm log shows each leg's first step, and a resume
        that silently restarted from scratch says "step 0"."""
        rank_zero_info(f"Training from step {trainer.global_step} (epoch {trainer.current_epoch})")

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        info = checkpoint.get(RECORD_KEY)
        if info and not same_task(info.get("task") or "", self.task):
            raise LvuError(
                f"checkpoint was written by task '{info.get('task')}' (recipe {info.get('recipe')}), "
                f"but this recipe runs task '{self.task}'"
            )


RNG_KEY = "lvu_rng"


def _portable_rng(states: dict[str, Any]) -> dict[str, Any]:
    """RNG states as tensors and plain Python values, so ``torch.load(weights_only=True)`` still reads the file."""
    kind, keys, pos, has_gauss, cached = states["numpy"]
    return {**states, "numpy": [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]}


def _native_rng(states: dict[str, Any]) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = states["numpy"]
    return {**states, "numpy": (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)}


class RngStates(Callback):
    """Saves every rank's RNG states (torch, CUDA, numpy, random) in checkpoints and restores them on resume.

    Lightning checkpoints hold none, so anything random in a training step (dropout, random crops, stochastic
    depth) would replay differently after a resume. Checkpoints are written by rank 0 (or, under DeepSpeed
    ZeRO-1/2, its client state only by rank 0), so states are gathered into a list indexed by global rank. Restored
    when training starts, after the sanity check, i.e. right where the saving run was. With a different world size
    the streams cannot continue; they then restart from the seed (with a warning).
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = _portable_rng(_collect_rng_states(include_cuda=torch.cuda.is_available()))
        if trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states)
        else:
            gathered = [states]
        checkpoint[RNG_KEY] = gathered

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._pending = checkpoint.get(RNG_KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if len(pending) != trainer.world_size:
            rank_zero_warn(f"the checkpoint holds RNG states of {len(pending)} ranks and this run has "
                           f"{trainer.world_size}: random streams restart from the seed")
            return
        _set_rng_states(_native_rng(pending[trainer.global_rank]))


class RestoreLoaderPosition(Callback):
    """Makes sure a resumed run's training loader gets its saved position (``state_dict``) before the first batch.

    Lightning hands the saved loader states over only when it creates the loader *after* the checkpoint was read.
    ``trainer.estimated_stepping_batches`` in ``configure_optimizers`` (which every schedule needs) creates it
    before, and the states are then silently dropped: the resumed run replays the epoch from its first batch.
    Uses the fit loop's private fields; ``tests/test_resume.py`` fails if a Lightning release changes them.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop
        pending = getattr(loop, "_combined_loader_states_to_load", None)
        loader = getattr(loop, "_combined_loader", None)
        if pending and loader is not None:
            loader._load_state_dicts(pending)
            loop._combined_loader_states_to_load = []


class DataHealth(Callback):
    """Logs how many bad training samples the loader skipped, per reason (``data/skipped_<reason>``).

    Counts are this rank's running totals; the loader also logs each skip with its shard and key.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        skipped = getattr(trainer.train_dataloader, "skipped", None)
        if skipped:
            pl_module.log_dict({f"data/skipped_{reason}": float(n) for reason, n in skipped.items()},
                               on_step=True, on_epoch=False, rank_zero_only=True)


class LvuModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves ``last.ckpt`` when training ends between two scheduled saves.

    Stock Lightning saves only on its schedule (every N steps, epoch or validation ends), so a run stopped by
    ``max_steps`` off that schedule would lose its final steps.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning forgets the checkpoint history when ``dirpath`` changed, so a run folder that was moved or
        copied (scratch to project space, a renamed experiment) would, on resume, find a ``last.ckpt`` it does not
        know and write ``last-v1.ckpt`` beside it: the next resume would take the stale ``last.ckpt``. When the
        checkpoint being resumed lies in this folder (``resuming_from``: the run's own history, moved; not another
        run's checkpoint given with ``--ckpt``), the history is moved with it, keeping only files that are here."""
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath and self._resumes_own_history():
            moved = _rebased(state_dict, Path(old), Path(self.dirpath))
            if moved["last_model_path"] and Path(moved["last_model_path"]).exists():
                rank_zero_info(f"the run folder was moved (its checkpoints were in {old}): continuing in "
                               f"{self.dirpath}")
                state_dict = moved
        super().load_state_dict(state_dict)

    resuming_from: Path | None = None  # set by the run before fitting (lvu.train.run)

    def _resumes_own_history(self) -> bool:
        if self.resuming_from is None:
            return False
        return Path(self.resuming_from).resolve().parent == Path(self.dirpath).resolve()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and trainer.global_step != self._last_global_step_saved and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        previous = self.best_model_path
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self.best_model_path and self.best_model_path != previous and trainer.is_global_zero:
            # Evaluation stages and `--ckpt RUN_DIR` find the best checkpoint here without unpickling any.
            record = {"path": Path(self.best_model_path).name, "monitor": self.monitor,
                      "score": float(self.best_model_score) if self.best_model_score is not None else None,
                      "global_step": trainer.global_step}
            best = Path(self.dirpath) / BEST_RECORD
            tmp = best.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            os.replace(tmp, best)


def _rebased(state: dict[str, Any], old: Path, new: Path) -> dict[str, Any]:
    """ModelCheckpoint's state with every path inside ``old`` moved to the same place inside ``new``."""

    def move(path: Any) -> Any:
        if not path:
            return path
        try:
            return str(new / Path(path).relative_to(old))
        except ValueError:  # outside the old folder: not ours to move
            return path

    moved = {**state, "dirpath": str(new)}
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        moved[key] = move(state.get(key))
    best_k = {move(k): v for k, v in (state.get("best_k_models") or {}).items()}
    moved["best_k_models"] = {k: v for k, v in best_k.items() if Path(k).exists()}
    return moved


class JsonlPredictionWriter(BasePredictionWriter):
    """Writes what ``predict_step`` returns (a list of JSON-serialisable dicts) as JSON lines, one file per rank."""

    def __init__(self, out: Path) -> None:
        super().__init__(write_interval="batch")
        self.out = Path(out)
        self._handle = None

    def path_for_rank(self, rank: int, world_size: int) -> Path:
        return self.out if world_size == 1 else self.out.with_suffix(f".rank{rank}{self.out.suffix}")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.path_for_rank(trainer.global_rank, trainer.world_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("w", encoding="utf-8")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        assert self._handle is not None
        for record in prediction or []:
            self._handle.write(json.dumps(record, default=_to_json) + "\n")
        self._handle.flush()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _to_json(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
