"""Writing a dataset of shards from numbered items, in parallel, reproducibly and resumably.

Item ``i`` always lands in shard ``i // maxcount``, whatever the number of workers, so the output is the same bytes
for the same inputs, and an interrupted run resumes by skipping the shards that already exist (shards are renamed
into place only when complete). Items that cannot be produced are skipped and listed in ``skipped.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lvu.data.shards import Manifest, ShardInfo, count_samples, shard_path, write_shard
from lvu.errors import LvuError


@dataclass
class Skipped:
    """An input item that produced no sample, and why."""

    item: str
    reason: str
    message: str = ""


Produced = tuple[str, dict[str, Any]] | Skipped
SKIPPED_FILE = "skipped.jsonl"


@dataclass
class WriteReport:
    manifest: Manifest
    written: int
    skipped: list[Skipped]
    reused_shards: int


@contextlib.contextmanager
def _mapper(make: Callable[[int], Produced], workers: int) -> Iterator[Callable[[range], Iterator[Produced]]]:
    """``map`` over items, in order, in one pool of worker processes kept for the whole dataset."""
    if workers <= 1:
        yield lambda items: map(make, items)
        return
    # fork: workers inherit the parent's imports and state, and `make` need not be importable by name.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield lambda items: pool.map(make, items, chunksize=1)


def write_dataset(out: Path, count: int, make: Callable[[int], Produced], *, maxcount: int = 100,
                  workers: int = 1, kind: str = "video", extra: dict[str, Any] | None = None,
                  description: str = "writing shards", resume: bool = True, quiet: bool = False) -> WriteReport:
    """Produce items ``0..count-1`` with ``make`` and write them as shards plus ``manifest.json`` into ``out``.

    Args:
        make: item number -> ``(key, {ext: value})`` or :class:`Skipped`. Must be deterministic.
        maxcount: items per shard.
        resume: keep shards already present in ``out`` (from an interrupted run) instead of recomputing them.
    """
    if maxcount <= 0:
        raise LvuError(f"--maxcount must be positive, got {maxcount}")
    out.mkdir(parents=True, exist_ok=True)
    skipped_path = out / SKIPPED_FILE
    previous_skips = read_skips(skipped_path) if resume else {}
    shards: list[ShardInfo] = []
    skipped: list[Skipped] = []
    written = reused = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with _mapper(make, workers) as produce, Progress(*columns, disable=quiet, transient=False) as progress:
        task = progress.add_task(description, total=count)
        for shard_index in range(math.ceil(count / maxcount)):
            items = range(shard_index * maxcount, min(count, (shard_index + 1) * maxcount))
            path = shard_path(out, shard_index)
            if resume and path.is_file():
                shards.append(ShardInfo(path, count_samples(path)))
                skipped += previous_skips.get(shard_index, [])
                reused += 1
                progress.advance(task, len(items))
                continue
            produced: list[tuple[str, dict[str, Any]]] = []
            shard_skips: list[Skipped] = []
            for result in produce(items):
                if isinstance(result, Skipped):
                    shard_skips.append(result)
                else:
                    produced.append(result)
                progress.advance(task)
            if produced:
                write_shard(path, produced)
                shards.append(ShardInfo(path, len(produced)))
                written += len(produced)
            skipped += shard_skips
            previous_skips[shard_index] = shard_skips
            write_skips(skipped_path, previous_skips)
    manifest = Manifest(shards=shards, kind=kind, extra=extra or {})
    manifest.save(out)
    return WriteReport(manifest=manifest, written=written, skipped=skipped, reused_shards=reused)


def write_skips(path: Path, by_shard: dict[int, list[Skipped]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for shard_index in sorted(by_shard):
            for skip in by_shard[shard_index]:
                f.write(json.dumps({"shard": shard_index, **asdict(skip)}) + "\n")


def read_skips(path: Path) -> dict[int, list[Skipped]]:
    by_shard: dict[int, list[Skipped]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                by_shard.setdefault(int(record.pop("shard")), []).append(Skipped(**record))
    return by_shard
