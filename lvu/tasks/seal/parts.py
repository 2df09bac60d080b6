"""Writing a prediction stage's per-video outputs as parts (lvu.data.token_shards), and the folder identity that
keeps the outputs of two settings apart."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lvu.data.token_shards import (
    IDENTITY_FILE,
    done_keys,
    next_part_number,
    part_path,
    parts,
    write_manifest,
    write_part,
)
from lvu.data.unreadable import UnreadableLog
from lvu.errors import ConfigError


def plain(section: Any) -> Any:
    """A config dataclass as plain JSON values (enums as their values)."""
    return json.loads(json.dumps(asdict(section), default=str))


def claim_folder(folder: Path, wanted: dict[str, Any], what: str) -> Path:
    """An output folder, its identity compared with the one recorded on its first use (written by the writer)."""
    record = folder / IDENTITY_FILE
    if record.is_file():
        recorded = json.loads(record.read_text())
        if recorded != wanted:
            changed = sorted(_differences(recorded, wanted))
            raise ConfigError(f"{folder} holds {what} made with other settings ({', '.join(changed)}); "
                              "use another output.folder, or delete this one to start again")
    return folder


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


@dataclass
class VideoOutput:
    """What a prediction stage writes for one video: its samples (key, {ext: value}), kept in one part."""

    video: str
    samples: list[tuple[str, dict[str, Any]]]


class PartWriter(BasePredictionWriter):
    """Buffers each rank's :class:`VideoOutput` and writes a part every ``part_videos`` videos (and at the end);
    records unreadable videos; writes the folder's identity and, at the end, its manifest."""

    def __init__(self, folder: Path, part_videos: int, identity: dict[str, Any], kind: str) -> None:
        super().__init__(write_interval="batch")
        self.folder, self.part_videos, self.identity, self.kind = folder, part_videos, identity, kind
        self._buffer: list[VideoOutput] = []
        self._number = 0
        self._written = 0
        self._unreadable: UnreadableLog | None = None  # this rank's, set when prediction starts

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank has planned its videos from the parts on disk (the loader was set up before this hook); nobody
        # writes until all have, or a fast rank's part would change a slow rank's plan.
        trainer.strategy.barrier("lvu-parts-planned")
        self.folder.mkdir(parents=True, exist_ok=True)
        if trainer.is_global_zero:
            (self.folder / IDENTITY_FILE).write_text(json.dumps(self.identity, indent=1, sort_keys=True) + "\n")
        # Part numbers: one past those on disk, then every rank its own stride (no two ranks share a number).
        self._number = next_part_number(self.folder) + trainer.global_rank
        self._unreadable = UnreadableLog(self.folder, trainer.global_rank)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self._buffer += prediction or []
        if len(self._buffer) >= self.part_videos:
            self._flush(trainer)
        assert self._unreadable is not None  # videos the loader could not read: not tried again on a rerun
        self._unreadable.record(getattr(trainer.predict_dataloaders, "bad_samples", []))

    def _flush(self, trainer: L.Trainer) -> None:
        if not self._buffer:
            return
        samples = [sample for output in self._buffer for sample in output.samples]
        write_part(part_path(self.folder, trainer.global_rank, self._number), samples)
        self._written += len(self._buffer)
        self._number += trainer.world_size
        self._buffer = []

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A stop (a scheduler's signal, an error): the buffered videos are complete, so they are written now
        rather than done again after the restart."""
        self._flush(trainer)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        trainer.strategy.barrier("lvu-parts-written")
        if trainer.is_global_zero:
            write_manifest(self.folder, self.kind, {"identity": self.identity})
            rank_zero_info(f"{len(parts(self.folder))} part(s) in {self.folder} ({self._written} video(s) written "
                           f"by rank 0 in this run)")


def done_videos(folder: Path, kind: str, identity: dict[str, Any]) -> set[str]:
    """The videos already done in an output folder (see lvu.data.token_shards.done_keys). Rank 0 also rewrites the
    folder's manifest over the parts on disk first: a run killed after its last part, or a rerun with nothing left
    (Lightning then runs no prediction hooks), would otherwise leave a manifest that lists fewer parts than exist."""
    if not folder.is_dir():
        return set()
    if parts(folder) and rank_zero_only.rank == 0:
        write_manifest(folder, kind, {"identity": identity})
    return done_keys(folder)


def collate_list(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Videos of different lengths are not stacked: a batch is the list of its decoded samples."""
    return samples
