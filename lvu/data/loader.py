"""The training/evaluation loader over shards: rank-balanced, exactly resumable, tolerant of bad samples.

Why not a stock ``webdataset.WebDataset`` pipeline: its streams cannot resume mid-epoch, a shuffle buffer makes the
order depend on the worker count, and the per-rank batch count must be forced with ``with_epoch``. Here every epoch
is *planned* instead: a pure function of (seed, epoch, rank) says which sample goes into which batch.

* Order: shards are shuffled per epoch; ranks take contiguous slices of that order (each reads its own shards), and
  each rank shuffles its slice. ``resampled=True`` instead draws every batch with replacement (infinite streams).
* Balance: each rank gets ``floor(N / (world * batch))`` batches (training) or ``ceil`` with flagged padding
  (evaluation, so every sample is seen once), computed from the manifest: equal on all ranks, so DDP never hangs.
* Workers: worker ``w`` of ``W`` builds batches ``start+w, start+w+W, ...``, which is exactly the round-robin order
  in which ``torch.utils.data.DataLoader`` hands them out. Resuming at batch ``start`` is therefore an O(1) skip:
  nothing is replayed, and the result does not depend on ``num_workers``. Workers start from a fork server, never
  straight from the (multi-threaded) training process: lvu.data.worker_server says why.
* Randomness inside a sample (frame sampling, augmentation) comes from a generator seeded by (seed, epoch, shard,
  index), again independent of workers and ranks.
* Bad data: a sample that fails to read or decode is replaced by another sample of the same rank, drawn from a
  generator seeded by (seed, epoch, rank, batch, slot, attempt): batch counts and sizes never change and a resumed run
  makes the same replacements. Skips are counted per reason and logged with shard and key. ``strict=True`` raises
  instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lvu.data.shards import BadSample, ShardInfo, ShardReader, parse_json, sample_place
from lvu.data.video import VideoError
from lvu.data.workers import exit_with, ignore_preemption_signals
from lvu.errors import LvuError

log = logging.getLogger("lvu.data")

Decode = Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]
Collate = Callable[[list[dict[str, Any]]], Any]

# Replacement draws per bad sample before the loader gives up (a shard set that is mostly broken is an error).
MAX_REPLACEMENTS = 16


class SampleSet:
    """The samples a loader plans over: every sample of some shards, or a selected subset.

    Samples are (shard number, index inside the shard) pairs held as two int arrays, so millions of samples cost a
    few megabytes.
    """

    def __init__(self, shards: Sequence[ShardInfo], shard_ids: np.ndarray | None = None,
                 indices: np.ndarray | None = None) -> None:
        self.shards = list(shards)
        if shard_ids is None or indices is None:
            counts = np.array([s.samples for s in self.shards], dtype=np.int64)
            shard_ids = np.repeat(np.arange(len(self.shards), dtype=np.int64), counts)
            starts = np.repeat(np.cumsum(counts) - counts, counts)
            indices = np.arange(int(counts.sum()), dtype=np.int64) - starts
        self.shard_ids = np.asarray(shard_ids, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.shard_ids)

    def select(self, keep: Callable[[dict[str, Any]], bool]) -> SampleSet:
        """The samples whose annotation JSON (with the sample's key added as ``__key__``) satisfies ``keep``
        (reads only the small json members)."""
        reader = ShardReader(self.shards)
        chosen = []
        unreadable: Counter[str] = Counter()
        try:
            for position, (shard, index) in enumerate(zip(self.shard_ids, self.indices, strict=True)):
                try:
                    raw = reader.read(int(shard), int(index), exts=("json",))
                    if keep({**parse_json(raw), "__key__": raw["__key__"]}):
                        chosen.append(position)
                except BadSample as exc:
                    unreadable[exc.reason] += 1
        finally:
            reader.close()
        if unreadable:
            log.warning("left out %d sample(s) whose annotation could not be read while selecting: %s",
                        sum(unreadable.values()), dict(unreadable))
        keep_idx = np.asarray(chosen, dtype=np.int64)
        return SampleSet(self.shards, self.shard_ids[keep_idx], self.indices[keep_idx])

    def subset(self, positions: np.ndarray) -> SampleSet:
        """The samples at ``positions`` (indices into this set)."""
        positions = np.asarray(positions, dtype=np.int64)
        return SampleSet(self.shards, self.shard_ids[positions], self.indices[positions])

    @staticmethod
    def join(sets: Sequence[SampleSet]) -> SampleSet:
        """One set holding every sample of ``sets`` (their shard lists concatenated)."""
        shards, shard_ids, indices, offset = [], [], [], 0
        for part in sets:
            shards += part.shards
            shard_ids.append(part.shard_ids + offset)
            indices.append(part.indices)
            offset += len(part.shards)
        return SampleSet(shards, np.concatenate(shard_ids), np.concatenate(indices))


@dataclass(frozen=True)
class PlanSpec:
    """Everything an epoch plan depends on."""

    batch_size: int
    rank: int
    world_size: int
    seed: int
    shuffle: bool
    drop_last: bool
    resampled: bool = False
    epoch_batches: int | None = None  # resampled: batches per rank per (virtual) epoch


class EpochPlan:
    """Which samples each batch of one rank holds in one epoch."""

    def __init__(self, samples: SampleSet, spec: PlanSpec, epoch: int) -> None:
        self.samples, self.spec, self.epoch = samples, spec, epoch
        n, r, bs = len(samples), spec.world_size, spec.batch_size
        if n == 0 and (spec.drop_last or spec.resampled):
            raise LvuError("the shard set holds no samples")
        if n == 0:  # evaluation over nothing (everything already done): no batches
            self.num_batches, self._slots, self._pad = 0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
            return
        if spec.resampled:
            if not spec.epoch_batches:
                raise LvuError("resampled loading needs data.epoch_batches (batches per rank per epoch)")
            self.num_batches = spec.epoch_batches
            self._slots = None
            return
        self.num_batches = n // (r * bs) if spec.drop_last else math.ceil(n / (r * bs))
        if self.num_batches == 0:
            raise LvuError(
                f"{n} samples cannot fill one batch of {bs} on each of {r} rank(s); lower data.batch_size or "
                f"add data"
            )
        order = self._global_order()
        per_rank = self.num_batches * bs
        if spec.drop_last:
            # Training: a contiguous slice of the (shard-grouped) order, so each rank reads its own shards.
            slots = np.arange(spec.rank * per_rank, (spec.rank + 1) * per_rank)
        else:
            # Evaluation: every world_size-th slot, dealt to the batches column by column, so padding spreads over
            # ranks and batches instead of filling the last rank's last batches (a batch is all padding only when
            # a rank has fewer real samples than batches).
            slots = (np.arange(per_rank) * r + spec.rank).reshape(bs, self.num_batches).T.reshape(-1)
        if spec.shuffle:
            slots = slots[self._rng(1, spec.rank).permutation(per_rank)]
        self._pad = slots >= n  # evaluation padding wraps around and is flagged
        self._slots = order[slots % n]

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.spec.seed, self.epoch, *key])

    def _global_order(self) -> np.ndarray:
        """Positions into the SampleSet: grouped by shard, shards in a per-epoch random order when shuffling."""
        n = len(self.samples)
        if not self.spec.shuffle:
            return np.arange(n)
        shard_order = self._rng(0).permutation(len(self.samples.shards))
        rank_of_shard = np.empty_like(shard_order)
        rank_of_shard[shard_order] = np.arange(len(shard_order))
        return np.lexsort((np.arange(n), rank_of_shard[self.samples.shard_ids]))

    def batch(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions (into the SampleSet) of batch ``j`` and a padding flag per slot."""
        bs = self.spec.batch_size
        if self._slots is None:
            positions = self._rng(2, self.spec.rank, j).integers(0, len(self.samples), bs)
            return positions, np.zeros(bs, dtype=bool)
        return self._slots[j * bs:(j + 1) * bs], self._pad[j * bs:(j + 1) * bs]

    def replacement(self, j: int, slot: int, attempt: int) -> int:
        """A substitute for a bad sample: another sample of this rank's epoch (or of the whole set if resampled)."""
        rng = self._rng(3, self.spec.rank, j, slot, attempt)
        if self._slots is None:
            return int(rng.integers(0, len(self.samples)))
        return int(self._slots[rng.integers(0, len(self._slots))])


@dataclass
class Skip:
    reason: str
    shard: str
    key: str
    message: str
    position: int  # the sample's place in the SampleSet: one bad sample met twice (as a replacement too) counts once

    def where(self) -> str:
        return sample_place(self.shard, self.key)


class _PlannedBatches(IterableDataset):
    """Runs inside each data-loader worker: reads, decodes and collates the batches that worker owns."""

    def __init__(self, samples: SampleSet, plan: EpochPlan, start: int, decode: Decode, collate: Collate,
                 strict: bool) -> None:
        super().__init__()
        self.samples, self.plan, self.start = samples, plan, start
        self.decode, self.collate, self.strict = decode, collate, strict

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader = ShardReader(self.samples.shards)
        try:
            for j in range(self.start + worker, self.plan.num_batches, workers):
                yield self._batch(reader, j)
        finally:
            reader.close()

    def _load(self, reader: ShardReader, position: int, replica: int) -> dict[str, Any]:
        shard, index = int(self.samples.shard_ids[position]), int(self.samples.indices[position])
        raw = reader.read(shard, index)
        seed = [self.plan.spec.seed, self.plan.epoch, shard, index, replica]
        try:
            sample = self.decode(raw, np.random.default_rng(seed))
        except VideoError as exc:
            raise BadSample(exc.reason, str(exc), shard=raw["__shard__"], key=raw["__key__"]) from None
        except BadSample as exc:
            exc.shard, exc.key = exc.shard or raw["__shard__"], exc.key or raw["__key__"]
            raise
        sample.setdefault("__key__", raw["__key__"])
        return sample

    def _batch(self, reader: ShardReader, j: int) -> dict[str, Any]:
        positions, pads = self.plan.batch(j)
        samples, skips = [], []
        for slot, (position, pad) in enumerate(zip(positions, pads, strict=True)):
            candidate, replica = int(position), int(pad)
            for attempt in range(MAX_REPLACEMENTS + 1):
                try:
                    sample = self._load(reader, candidate, replica)
                    if attempt and not self.plan.spec.drop_last:
                        pad = True  # evaluation: a stand-in for a bad sample must not count twice
                    break
                except BadSample as exc:
                    if self.strict:
                        raise LvuError(f"bad sample ({exc.reason}) in {exc.where()}: {exc} "
                                       f"(data.strict=true; set it false to skip bad samples)") from None
                    skips.append(Skip(exc.reason, exc.shard, exc.key, str(exc), candidate))
                    candidate, replica = self.plan.replacement(j, slot, attempt), 1 + slot
            else:
                raise LvuError(
                    f"gave up after {MAX_REPLACEMENTS} bad samples in a row while building batch {j}; last: "
                    f"{skips[-1].reason} in {skips[-1].where()}. Run `lvu data inspect` "
                    f"on the shards"
                )
            sample["__pad__"] = bool(pad)
            samples.append(sample)
        return {"index": j, "batch": self.collate(samples), "keys": [s["__key__"] for s in samples], "skips": skips}


def _defining_modules(*objects: Any) -> list[str]:
    """The modules that define ``objects`` (functions, or instances of classes) and their partials' functions."""
    names = []
    for obj in objects:
        while isinstance(obj, functools.partial):
            obj = obj.func
        module = getattr(obj, "__module__", None) or type(obj).__module__
        if module and module != "builtins":
            names.append(module)
    return names


def _worker_context(preload: list[str]) -> Any:
    """The ``forkserver`` multiprocessing context for loader workers (why: lvu.data.worker_server).

    The server imports ``preload`` once when it starts (the first loader with workers in a process starts it): the
    modules that define the loader's decoder and collate function. Without them every worker of every pass would
    import them itself (a task module pulls in Lightning and transformers: seconds per worker, per epoch, per loader).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(dict.fromkeys(["lvu.data.worker_server", *preload])))
    return context


def _forget_inherited_fork_server() -> None:
    """In a process forked from one that started the fork server (e.g. ranks started by forking), that server is
    not a child: Python 3.11 would try to wait on it and fail. Drop the inherited handle (and the parent's
    liveness pipe); this process starts its own server when it needs one."""
    server = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is None:
        return
    if server._forkserver_alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(server._forkserver_alive_fd)
    server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None


os.register_at_fork(after_in_child=_forget_inherited_fork_server)


def _start_worker(worker_id: int, owner_pid: int) -> None:
    ignore_preemption_signals()
    exit_with(owner_pid)


def _worker_message(message: str) -> str:
    """PyTorch re-raises a worker's error with the worker traceback in the message; keep the user's one line."""
    if not message.startswith("Caught "):
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if last.startswith(("lvu.errors.", "LvuError")) and ": " in last else last


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardLoader:
    """A resumable, rank-balanced loader that Lightning uses like a DataLoader.

    Lightning saves ``state_dict()`` into checkpoints and calls ``load_state_dict()`` before resuming, so a resumed
    run sees exactly the batches an uninterrupted one would have.

    Args:
        samples: what to load.
        decode: raw sample (bytes per member) + generator -> decoded sample dict; raises BadSample/VideoError.
        collate: list of decoded samples -> batch.
        batch_size: samples per batch on each rank.
        num_workers: data-loader worker processes.
        shuffle: per-epoch random order (training); False keeps shard order (evaluation).
        drop_last: training drops the ragged tail; evaluation pads the last batches and flags the copies
            (``sample["__pad__"]``) so every sample counts once.
        seed: base seed of all randomness in the data.
        strict: raise on the first bad sample instead of skipping it.
        resampled: draw batches with replacement; ``epoch_batches`` sets the epoch length.
        rank, world_size: default to torch.distributed's when initialised.
        evaluation: every pass is epoch 0, so per-sample randomness (if a decoder uses any) is the same at every
            validation and the numbers compare across epochs.
    """

    def __init__(self, samples: SampleSet, decode: Decode, collate: Collate, *, batch_size: int,
                 num_workers: int = 0, shuffle: bool = True, drop_last: bool = True, seed: int = 0,
                 strict: bool = False, resampled: bool = False, epoch_batches: int | None = None,
                 prefetch_factor: int = 2, pin_memory: bool = False, rank: int | None = None,
                 world_size: int | None = None, name: str = "train", evaluation: bool = False) -> None:
        if batch_size <= 0:
            raise LvuError(f"data.batch_size must be positive, got {batch_size}")
        self.samples, self.decode, self.collate = samples, decode, collate
        self.batch_size, self.num_workers = batch_size, num_workers
        self.shuffle, self.drop_last, self.seed, self.strict = shuffle, drop_last, seed, strict
        self.resampled, self.epoch_batches = resampled, epoch_batches
        self.prefetch_factor, self.pin_memory = prefetch_factor, pin_memory
        self._rank, self._world_size = rank, world_size
        self.name, self.evaluation = name, evaluation
        self.epoch = 0
        self.consumed = 0  # batches of the current epoch already handed out
        self.skipped: Counter[str] = Counter()
        self._bad_this_pass: set[int] = set()  # positions already counted in self.skipped during this pass
        self.bad_samples: list[Skip] = []  # this pass's bad samples, each once (an evaluation records them)
        self.last_keys: list[str] = []
        self._restored = False
        self._plan: EpochPlan | None = None

    # -- planning ---------------------------------------------------------------------------------------------------

    @property
    def spec(self) -> PlanSpec:
        rank, world = _distributed()
        return PlanSpec(
            batch_size=self.batch_size,
            rank=self._rank if self._rank is not None else rank,
            world_size=self._world_size if self._world_size is not None else world,
            seed=self.seed,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            resampled=self.resampled,
            epoch_batches=self.epoch_batches,
        )

    def plan(self, epoch: int) -> EpochPlan:
        spec = self.spec
        if self._plan is None or self._plan.epoch != epoch or self._plan.spec != spec:
            self._plan = EpochPlan(self.samples, spec, epoch)
        return self._plan

    def __len__(self) -> int:
        return self.plan(self.epoch).num_batches

    # -- iteration --------------------------------------------------------------------------------------------------

    def _normalise(self) -> None:
        if self.consumed >= len(self):
            self.epoch, self.consumed = (0 if self.evaluation else self.epoch + 1), 0

    def __iter__(self) -> Iterator[Any]:
        if self.evaluation:
            self.epoch, self.consumed = 0, 0
        elif not self._restored and self.consumed:
            # A new pass that is not a resume (e.g. Lightning's limit_train_batches ended the last one early):
            # start the next epoch, as a DataLoader would.
            self.epoch, self.consumed = self.epoch + 1, 0
        self._restored = False
        self._normalise()
        if self.consumed == 0:  # a new pass (a resumed one keeps what it had counted)
            self._bad_this_pass = set()
            self.bad_samples = []
        plan = self.plan(self.epoch)
        dataset = _PlannedBatches(self.samples, plan, self.consumed, self.decode, self.collate, self.strict)
        workers = min(self.num_workers, plan.num_batches - self.consumed)
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            pin_memory=self.pin_memory,
            # Its own generator: DataLoader would otherwise draw a seed from torch's global RNG at every pass, so
            # a resumed run (which starts a pass mid-epoch) would shift the global stream that dropout etc. use.
            # All randomness of the data comes from the plan; the worker seeds it gives are not used.
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=functools.partial(_start_worker, owner_pid=os.getpid()) if workers > 0 else None,
            multiprocessing_context=_worker_context(_defining_modules(self.decode, self.collate)) if workers > 0
            else None,
        )
        expected = self.consumed
        try:
            for item in loader:
                if item["index"] != expected:
                    raise RuntimeError(f"data loader order broken: got batch {item['index']}, expected {expected}")
                self._account(item["skips"])
                self.last_keys = item["keys"]
                self.consumed = expected = expected + 1
                yield item["batch"]
        except LvuError as exc:
            raise LvuError(_worker_message(str(exc))) from None

    def _account(self, skips: list[Skip]) -> None:
        """Count and report each bad sample once per pass (a replacement draw may meet the same one again)."""
        for skip in skips:
            if skip.position in self._bad_this_pass:
                continue
            self._bad_this_pass.add(skip.position)
            self.bad_samples.append(skip)
            self.skipped[skip.reason] += 1
            log.warning("skipped a bad sample (%s) in %s loader: %s: %s", skip.reason, self.name, skip.where(),
                        skip.message)

    # -- resume -----------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        self._normalise()
        spec = self.spec
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "batch_size": spec.batch_size,
            "world_size": spec.world_size,
            "samples": len(self.samples),
            "seed": self.seed,
            "skipped": dict(self.skipped),
            "bad_this_pass": sorted(self._bad_this_pass),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        self.skipped = Counter(state.get("skipped", {}))
        self._bad_this_pass = set(state.get("bad_this_pass", []))
        spec = self.spec
        saved = (state.get("batch_size"), state.get("world_size"), state.get("samples"), state.get("seed"))
        now = (spec.batch_size, spec.world_size, len(self.samples), self.seed)
        if saved != now:
            # A different layout cannot replay the same batches; keep the fraction of the epoch already seen.
            old_samples = self.consumed * (state.get("batch_size") or 1) * (state.get("world_size") or 1)
            self.consumed = min(len(self), old_samples // (spec.batch_size * spec.world_size))
            log.warning(
                "data position restored approximately: the checkpoint was written with (batch %s, world %s, "
                "%s samples, seed %s), this run has (batch %s, world %s, %s samples, seed %s)", *saved, *now
            )
        self._restored = True
