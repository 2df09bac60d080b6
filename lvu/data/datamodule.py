"""The LightningDataModule every shard-based task builds on: one ShardLoader per split."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np

from lvu.data.loader import Collate, Decode, SampleSet, ShardLoader
from lvu.data.shards import resolve_shards
from lvu.errors import ConfigError

SPLITS = ("train", "val", "test", "predict")
log = logging.getLogger(__name__)


@dataclass
class ShardDataConfig:
    """Where the shards are and how to load them (the recipe's ``data`` section; tasks add their own fields)."""

    train: Any = None
    """Training shards: a shard folder, a .tar or .tar.gz, a glob or brace pattern, a URL (``https://``, ``s3://``,
    ... : one shard, a brace pattern, or a folder's ``manifest.json``), a ``pipe:`` command, or a list of those
    (null: not used)."""
    train_weights: list[float] | None = None
    """Mix the data.train sources (a list) in these proportions: the first is taken whole, source i contributes
    w_i / w_0 times as many samples, drawn once without replacement (seeded); e.g. [40, 1] for FiLA-Video's real to
    synthetic long videos. Null: every sample of every source."""
    val: Any = None
    """Validation shards, as for train."""
    test: Any = None
    """Test shards, as for train."""
    predict: Any = None
    """Shards to predict on (``lvu predict``), as for train."""
    batch_size: int = 16
    """Training samples per batch on each rank."""
    eval_batch_size: int | None = None
    """Samples per batch for val/test/predict; null = batch_size."""
    num_workers: int = 2
    """Data-loader worker processes per rank (0: load in the training process)."""
    shuffle: bool = True
    """Shuffle the training samples every epoch (seeded: resumes replay the same order)."""
    resampled: bool = False
    """Draw training batches with replacement forever; an epoch is then epoch_batches batches per rank."""
    epoch_batches: int | None = None
    """Batches per rank that make an epoch when resampled."""
    strict: bool = False
    """Raise on the first bad sample (naming shard and key) instead of skipping and counting it."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead."""
    pin_memory: bool = False
    """Page-locked batches for faster copies to a GPU."""
    shard_cache: str | None = None
    """Where remote, piped and gzip-compressed shards are copied before reading (null: $LVU_SHARD_CACHE, else
    ~/.cache/lvu/shards). Node-local disk on a cluster; copies are reused until deleted."""


def split_sources(cfg: ShardDataConfig, split: str) -> list[str] | None:
    value = getattr(cfg, split)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"data.{split}: expected a shard path or a list of shard paths, got {value!r}")


def mixture(sources: list[str], weights: list[float], seed: int, cache: str | None = None) -> SampleSet:
    """The training samples of ``sources`` in the proportions ``weights`` (see ShardDataConfig.train_weights)."""
    if len(weights) != len(sources) or any(w <= 0 for w in weights):
        raise ConfigError(f"data.train_weights: one positive weight per data.train source ({len(sources)}), got "
                          f"{weights}")
    sets = [SampleSet(resolve_shards([source], cache)) for source in sources]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D6978]))  # its own stream ("mix")
    chosen = [sets[0]]
    for source, part, weight in zip(sources[1:], sets[1:], weights[1:], strict=True):
        wanted = round(weight / weights[0] * len(sets[0]))
        if wanted > len(part):
            log.warning("data.train_weights asks for %d samples of %s, which has %d: all of them are used", wanted,
                        source, len(part))
            wanted = len(part)
        chosen.append(part.subset(np.sort(rng.choice(len(part), size=wanted, replace=False))))
    return SampleSet.join(chosen)


class ShardDataModule(L.LightningDataModule):
    """Builds a :class:`ShardLoader` per split from a :class:`ShardDataConfig`.

    Args:
        cfg: the data section.
        seed: the recipe's seed (data order and per-sample randomness derive from it).
        decode: ``decode(split)`` -> the decoder for that split.
        collate: ``collate(split)`` -> the collate function for that split.
        select: optional ``select(split)`` -> predicate on the annotation JSON, or None to keep every sample.
        empty_ok: splits that may select no sample (a resumed extraction with nothing left): they get no batches
            instead of the "no samples" error.
    """

    def __init__(self, cfg: ShardDataConfig, seed: int, decode: Callable[[str], Decode],
                 collate: Callable[[str], Collate],
                 select: Callable[[str], Callable[[dict[str, Any]], bool] | None] | None = None,
                 empty_ok: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self._decode, self._collate, self._select = decode, collate, select
        self._empty_ok = empty_ok
        self._samples: dict[str, SampleSet] = {}
        self._loaders: dict[str, ShardLoader] = {}

    def samples(self, split: str) -> SampleSet:
        if split not in self._samples:
            sources = split_sources(self.cfg, split)
            if sources is None:
                raise ConfigError(f"data.{split} is not set: this stage needs {split} shards")
            if split == "train" and self.cfg.train_weights is not None:
                samples = mixture(sources, list(self.cfg.train_weights), self.seed, self.cfg.shard_cache)
            else:
                samples = SampleSet(resolve_shards(sources, self.cfg.shard_cache))
            keep = self._select(split) if self._select is not None else None
            if keep is not None:
                samples = samples.select(keep)
            if len(samples) == 0 and split not in self._empty_ok:
                raise ConfigError(f"data.{split}: no samples in {', '.join(sources)}")
            self._samples[split] = samples
        return self._samples[split]

    def loader(self, split: str) -> ShardLoader:
        # One loader object per split for the whole run: it carries the epoch and resume position.
        if split not in self._loaders:
            train = split == "train"
            cfg = self.cfg
            self._loaders[split] = ShardLoader(
                self.samples(split),
                self._decode(split),
                self._collate(split),
                batch_size=cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size),
                num_workers=cfg.num_workers,
                shuffle=train and cfg.shuffle,
                drop_last=train,
                seed=self.seed,
                strict=cfg.strict,
                resampled=train and cfg.resampled,
                epoch_batches=cfg.epoch_batches,
                prefetch_factor=cfg.prefetch_factor,
                pin_memory=cfg.pin_memory,
                name=split,
                evaluation=not train,
            )
        return self._loaders[split]

    def train_dataloader(self) -> ShardLoader:
        return self.loader("train")

    def val_dataloader(self) -> ShardLoader | list:
        return self.loader("val") if self.cfg.val is not None else []

    def test_dataloader(self) -> ShardLoader:
        return self.loader("test")

    def predict_dataloader(self) -> ShardLoader:
        return self.loader("predict")
