"""Per-video outputs of a distributed prediction stage, in tar parts that stock ``webdataset`` reads (SEAL's token
shards and selected-token videos).

Token shards: a sample is ``{key}.npy`` (float ``[N, D]``: the video's token embeddings) and ``{key}.json``
(``tokens``: per row, its kind, time span, box and source frame; ``duration_s``; the video's annotation, questions
included). Selected-token videos: one sample per question, keyed ``{video}--q{n}``.

Rank ``R`` of a run writes ``part-R{R:03d}-{n:06d}.tar`` every ``part_videos`` videos (renamed into place when
complete; a video's samples are always in one part); a later run numbers its parts after the highest ``n`` on disk,
so parts of runs with other world sizes never collide. Resuming: the videos in the complete parts (and those
recorded in ``failed-rank*.jsonl``: videos that could not be read) are done; a rerun does the rest. A kill loses at
most the parts being filled. ``manifest.json`` (sample counts per part, lvu's own readers) is rewritten at the start
and the end of every run.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lvu.data.shards import Manifest, ShardInfo, ShardReader, count_samples, parse_json, scan_tar, write_shard
from lvu.data.unreadable import unreadable_videos
from lvu.errors import LvuError

PART_GLOB = "part-R*-*.tar"
_PART = re.compile(r"part-R(\d{3})-(\d{6})\.tar$")
_QUESTION_SUFFIX = re.compile(r"--q\d+$")
IDENTITY_FILE = "settings.json"


def parts(folder: Path) -> list[Path]:
    """Complete parts, in name order."""
    return sorted(p for p in folder.glob(PART_GLOB) if _PART.search(p.name))


def next_part_number(folder: Path) -> int:
    """One past the highest part number on disk (any rank)."""
    return 1 + max((int(_PART.search(p.name).group(2)) for p in parts(folder)), default=-1)  # type: ignore[union-attr]


def part_path(folder: Path, rank: int, number: int) -> Path:
    return folder / f"part-R{rank:03d}-{number:06d}.tar"


def question_key(video: str, number: int) -> str:
    return f"{video}--q{number}"


def video_of(key: str) -> str:
    """The video a sample key belongs to (a question's sample: its video's key)."""
    return _QUESTION_SUFFIX.sub("", key)


def done_keys(folder: Path) -> set[str]:
    """Videos already done (their samples in a complete part) or recorded as unreadable."""
    keys: set[str] = set()
    for part in parts(folder):
        keys.update(video_of(key) for key, _ in scan_tar(part).samples)
    return keys | set(unreadable_videos(folder))


def write_part(path: Path, samples: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Write ``(key, {ext: value})`` samples as one part (atomically); returns the count."""
    return write_shard(path, samples)


def write_manifest(folder: Path, kind: str, extra: dict[str, Any]) -> Path:
    """``manifest.json`` over every complete part (``kind``: "features" for tokens, "video" for selected tokens)."""
    shards = [ShardInfo(p, count_samples(p)) for p in parts(folder)]
    return Manifest(shards=shards, kind=kind, extra=extra).save(folder)


class TokenIndex:
    """A token folder's samples by video key, read on demand (each part's headers scanned once)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        found = parts(folder)
        if not found:
            raise LvuError(f"{folder}: no token parts (part-R*-*.tar); run `lvu predict seal/extract` first")
        self._reader = ShardReader([ShardInfo(p, count_samples(p)) for p in found])
        self._where = {key: (shard, index) for shard, part in enumerate(found)
                       for index, (key, _) in enumerate(scan_tar(part).samples)}

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def read(self, key: str) -> tuple[np.ndarray, dict[str, Any]]:
        """Embeddings ``[N, D]`` and the json of video ``key``."""
        shard, index = self._where[key]
        raw = self._reader.read(shard, index)
        return np.load(io.BytesIO(raw["npy"]), allow_pickle=False), parse_json(raw)

    def close(self) -> None:
        self._reader.close()


def recorded_identity(folder: Path) -> dict[str, Any]:
    """The settings a folder's outputs were made with (``settings.json``)."""
    record = folder / IDENTITY_FILE
    if not record.is_file():
        raise LvuError(f"{folder}: no {IDENTITY_FILE}; is it a folder written by `lvu predict seal/extract`?")
    return json.loads(record.read_text())
