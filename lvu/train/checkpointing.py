"""Crash-safe checkpoint writing, and finding the newest complete checkpoint of a run.

A checkpoint only ever appears under its final name once it is complete, so a process killed while writing
(SIGKILL from the scheduler, OOM killer, node failure) leaves the previous checkpoint usable:

* files (DDP, one device): written to ``.<name>.partial-<pid>`` in the same folder, fsynced, then renamed over the
  old one (``os.replace`` is atomic on POSIX file systems);
* DeepSpeed folders (one shard per rank): every rank writes into ``.<name>.partial/``; after a barrier rank 0 adds a
  completion record (``lvu_complete.json``) and swaps the folder in (old one moved to ``.<name>.old`` first, deleted
  last). A kill between the two renames leaves ``.<name>.old`` or a complete ``.<name>.partial``; the resume
  finder takes whichever complete copy is newest.

Multi-node DeepSpeed needs a checkpoint folder shared by all nodes (DeepSpeed's own requirement for resuming).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lvu.ckpt import atomic_save, checkpoint_step, fsync_path
from lvu.train.rundir import LAST_CHECKPOINT, checkpoint_dir

log = logging.getLogger(__name__)

COMPLETE_RECORD = "lvu_complete.json"
PARTIAL_DIR = ".{name}.partial"
OLD_DIR = ".{name}.old"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target folder, fsync, then an atomic rename.

    Lightning's default writer also renames a finished file into place (through an fsspec transaction), but first
    serialises the whole checkpoint into memory, doubling host memory for large models, and never fsyncs. This one
    streams to disk and is durable once the rename returns.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_save(checkpoint, Path(path))


def save_deepspeed_atomically(strategy: Any, save: Any, checkpoint: dict[str, Any], filepath: Any) -> None:
    """Run DeepSpeed's collective ``save(checkpoint, folder)`` into a partial folder, then swap it in.

    ``strategy`` provides ``barrier`` and ``is_global_zero``; all ranks call this together.
    """
    target = Path(strategy.broadcast(str(filepath)))
    partial = target.parent / PARTIAL_DIR.format(name=target.name)
    old = target.parent / OLD_DIR.format(name=target.name)
    if strategy.is_global_zero:
        _heal(target, partial, old)
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
    strategy.barrier("lvu_deepspeed_save_start")
    save(checkpoint, partial)
    strategy.barrier("lvu_deepspeed_save_written")
    if strategy.is_global_zero:
        for written in partial.rglob("*"):  # DeepSpeed does not fsync its shards
            if written.is_file():
                fsync_path(written)
        record = {"global_step": checkpoint.get("global_step"), "epoch": checkpoint.get("epoch")}
        (partial / COMPLETE_RECORD).write_text(json.dumps(record) + "\n")
        fsync_path(partial / COMPLETE_RECORD)
        fsync_path(partial)
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(partial, target)
        fsync_path(target.parent)
        shutil.rmtree(old, ignore_errors=True)
        # A universal copy made to resume the previous checkpoint on another world size is stale now.
        shutil.rmtree(target.parent / f".{target.name}.universal", ignore_errors=True)
    strategy.barrier("lvu_deepspeed_save_done")


def _heal(target: Path, partial: Path, old: Path) -> None:
    """Finish a swap that a kill interrupted, so that starting a new save never deletes the only complete copy."""
    if target.exists():
        return
    for leftover in sorted((p for p in (partial, old) if (p / COMPLETE_RECORD).is_file()), key=_saved_step,
                           reverse=True)[:1]:
        os.replace(leftover, target)
        log.warning("restored %s from %s (a previous save was interrupted)", target, leftover)


def is_complete(path: Path) -> bool:
    """A checkpoint file under its final name is complete (see the module docstring); a DeepSpeed folder is when
    it has our completion record, or, for folders written by stock Lightning, DeepSpeed's ``latest`` tag file."""
    if path.is_file():
        return True
    if path.is_dir():
        return (path / COMPLETE_RECORD).is_file() or (
            (path / "latest").is_file() and not path.name.endswith((".partial", ".old"))
        )
    return False


def _saved_step(path: Path) -> int:
    """The global step of a complete DeepSpeed folder (from its completion record) or checkpoint file."""
    record = path / COMPLETE_RECORD
    if path.is_dir() and record.is_file():
        return int(json.loads(record.read_text()).get("global_step") or -1)
    return checkpoint_step(path)


def newest_complete(checkpoints: Path, last_name: str = "last.ckpt") -> Path | None:
    """The checkpoint to resume: ``last.ckpt`` when complete, else the newest complete leftover of an interrupted
    DeepSpeed swap (``.last.ckpt.partial`` with its completion record, or ``.last.ckpt.old``)."""
    last = checkpoints / last_name
    if is_complete(last):
        return last
    leftovers = [checkpoints / PARTIAL_DIR.format(name=last_name), checkpoints / OLD_DIR.format(name=last_name)]
    complete = [p for p in leftovers if p.is_dir() and (p / COMPLETE_RECORD).is_file()]
    if not complete:
        return None
    best = max(complete, key=_saved_step)
    log.warning("%s is missing or incomplete (a save was interrupted); resuming from %s", last, best)
    return best


def remove_partials(checkpoints: Path) -> list[Path]:
    """Delete the debris of interrupted saves (call on rank 0 before training, after choosing the checkpoint)."""
    removed = []
    for path in checkpoints.glob(".*.partial-*"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def find_best_checkpoint(run_dir: Path) -> Path | None:
    """The best checkpoint by the run's monitored metric (recorded in checkpoints/best.json), if any."""
    record = checkpoint_dir(run_dir) / "best.json"
    if not record.is_file():
        return None
    best = checkpoint_dir(run_dir) / json.loads(record.read_text())["path"]
    return best if best.exists() else None


def find_resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a ``fit`` in an existing run directory continues from (the newest complete one: see
    lvu.train.checkpointing), or None for a fresh run."""
    return newest_complete(checkpoint_dir(run_dir), LAST_CHECKPOINT)
