"""WebDataset shards: writing them reproducibly, describing them (manifest), indexing and reading samples.

Layout (see data/README.md): plain POSIX tar files whose members are ``{key}.{ext}``; the members of one sample are
consecutive. Video samples carry ``mp4`` + ``json``, feature samples ``npy`` + ``json``. A shard folder holds
``manifest.json`` with the sample count of every shard, so epoch lengths are known without reading the data.

We write tar files with :mod:`tarfile` rather than ``webdataset.TarWriter`` because the latter stamps the current
time into every member, and our outputs must be byte-identical for the same inputs. Readers locate samples by
scanning tar headers (:func:`scan_tar`) — cheap, since member data is skipped — which gives random access to any
sample, including in shards written by other tools (video2dataset layout).
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from webdataset.shardlists import expand_urls

from lvu.data.remote import (
    Fetched,
    cache_entry,
    display_name,
    fetch,
    is_gzip_name,
    is_remote,
    load_manifest_payload,
    remote_glob,
    shard_cache,
)
from lvu.errors import LvuError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SHARD_PATTERN = "shard-{:06d}.tar"
SHARD_GLOBS = ("*.tar", "*.tar.gz", "*.tgz")  # what a folder without a manifest is scanned for
# webdataset's rule (base_plus_ext): the key is the path up to the first dot of the file name.
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


class BadSample(Exception):
    """A sample that cannot be used; ``reason`` is a short tag counted by the loader (see data/README.md)."""

    def __init__(self, reason: str, message: str, *, shard: str = "", key: str = "") -> None:
        super().__init__(message)
        self.reason, self.shard, self.key = reason, shard, key

    def where(self) -> str:
        return sample_place(self.shard, self.key)


def sample_place(shard: str, key: str) -> str:
    """Where a sample is, for messages; a sample past the end of a truncated shard has no key to name."""
    return f"shard {shard}, key {key}" if key else f"shard {shard}"


# --------------------------------------------------------------------------------------------------------------------
# Writing


def encode_field(ext: str, value: Any) -> bytes:
    """Bytes for one member: dict/list -> JSON, ndarray -> .npy, str -> UTF-8, bytes as given."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"cannot write a {type(value).__name__} as .{ext}")


def check_key(key: str) -> str:
    if not key or "." in key or key.startswith("/") or "\\" in key:
        raise ValueError(f"invalid sample key {key!r}: keys must be non-empty and contain no '.'")
    return key


def write_shard(path: Path, samples: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Write ``(key, {ext: value})`` samples to one tar file, atomically and reproducibly; returns the count.

    The tar is written to a temporary name and renamed when complete, so a crash never leaves a half shard behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for key, fields in samples:
            check_key(key)
            for ext in sorted(fields, key=_member_order):
                data = encode_field(ext, fields[ext])
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
            count += 1
    os.replace(tmp, path)
    return count


def _member_order(ext: str) -> tuple[int, str]:
    # json first: a reader that stops early still sees the annotation of every complete sample.
    return (0 if ext == "json" else 1, ext)


@dataclass
class ShardInfo:
    """One tar file and how many samples it holds.

    ``source`` is set for shards that are fetched before reading (a URL, a ``pipe:`` command, a gzip-compressed
    tar: lvu.data.remote); ``path`` is then the local copy, made on first use."""

    path: Path
    samples: int
    source: str | None = None

    @property
    def name(self) -> str:
        return display_name(self.source) if self.source else self.path.name

    def local(self) -> Fetched:
        """The readable tar (fetched first when ``source`` is set) and why it holds less than it should, if known."""
        return fetch(self.source, self.path) if self.source else Fetched(self.path, None)


@dataclass
class Manifest:
    """``manifest.json``: sample counts per shard, so lengths and epochs are exact without reading data."""

    shards: list[ShardInfo]
    kind: str = "video"  # "video" | "features" | "mixed"
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(s.samples for s in self.shards)

    def save(self, folder: Path) -> Path:
        payload = {
            "schema_version": self.schema_version,
            "kind": self.kind,
            "total": self.total,
            "shards": [{"file": s.name, "samples": s.samples} for s in self.shards],
            **({"extra": self.extra} if self.extra else {}),
        }
        path = folder / MANIFEST
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: Path, cache: Path | None = None) -> Manifest:
        return cls.load_at(str(folder / MANIFEST), cache)

    @classmethod
    def load_at(cls, location: str, cache: Path | None = None) -> Manifest:
        """The manifest at a path or URL; its shards are named relative to it (remote or compressed ones are
        fetched only when read: each rank reads its own)."""
        base = location.rsplit("/", 1)[0]
        payload = load_manifest_payload(location)
        version = payload.get("schema_version")
        if version != SCHEMA_VERSION:
            raise LvuError(f"{location}: schema version {version} is not supported (this lvu reads {SCHEMA_VERSION})")
        shards = [located_shard(f"{base}/{s['file']}", int(s["samples"]), cache) for s in payload["shards"]]
        return cls(shards=shards, kind=payload.get("kind", "video"), extra=payload.get("extra", {}))


def needs_fetch(location: str) -> bool:
    """Whether ``location`` must be copied into the shard cache before it can be read by offset: a URL, a command,
    or a gzip-compressed tar (by its name: resolving a manifest of local tars opens none of them)."""
    return is_remote(location) or is_gzip_name(location)


def located_shard(location: str, samples: int, cache: Path | None) -> ShardInfo:
    """A shard with a known sample count: a local plain tar as is, anything else through the cache."""
    if needs_fetch(location):
        return ShardInfo(cache_entry(location, cache or shard_cache()), samples, source=location)
    return ShardInfo(Path(location), samples)


def shard_path(folder: Path, index: int) -> Path:
    return folder / SHARD_PATTERN.format(index)


# --------------------------------------------------------------------------------------------------------------------
# Indexing and reading


@dataclass
class TarIndex:
    """Where each sample's members are inside one tar: ``samples[i] = (key, {ext: (offset, size)})``."""

    samples: list[tuple[str, dict[str, tuple[int, int]]]]
    error: str | None = None  # set when the tar ends early (truncated) or is unreadable


def scan_tar(path: Path, known_error: str | None = None) -> TarIndex:
    """Index a tar by reading its headers only. A truncated tar keeps the samples that are complete.

    ``known_error``: why the file is already known to be short (a fetched copy of a cut gzip stream); it is reported
    even when the tar happens to end cleanly at a member boundary."""
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    error = None
    try:
        size = path.stat().st_size
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _KEY_EXT.match(member.name)
                if match is None:
                    continue
                key, ext = match.group(1), match.group(2)
                if member.offset_data + member.size > size:
                    error = f"member {member.name} extends past the end of the file (truncated tar)"
                    break
                if samples and samples[-1][0] == key:
                    samples[-1][1][ext] = (member.offset_data, member.size)
                else:
                    samples.append((key, {ext: (member.offset_data, member.size)}))
    except (tarfile.TarError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    error = known_error or error  # the cause (a cut gzip stream) before its symptom in the tar
    if error and samples:
        # The last sample may have lost members to the truncation: it is not trustworthy.
        samples.pop()
    return TarIndex(samples=samples, error=error)


# Indices of tars this process has scanned, by (path, size, mtime): a loader builds a new reader for every pass (and
# validation pass), and rescanning every header each time was a tenth of a small probe's run time.
_INDEX_CACHE: OrderedDict[tuple[str, int, int, str | None], TarIndex] = OrderedDict()
_INDEX_CACHE_SIZE = 4096


def indexed_tar(path: Path, known_error: str | None = None) -> TarIndex:
    """``scan_tar``, remembered for as long as the file keeps its size and modification time."""
    try:
        stat = path.stat()
    except OSError:
        return scan_tar(path, known_error)
    key = (str(path), stat.st_size, stat.st_mtime_ns, known_error)
    index = _INDEX_CACHE.pop(key, None) or scan_tar(path, known_error)
    _INDEX_CACHE[key] = index
    while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
        _INDEX_CACHE.popitem(last=False)
    return index


def count_samples(path: Path) -> int:
    return len(scan_tar(path).samples)


@dataclass
class ScannedShard:
    info: ShardInfo
    error: str | None  # why the tar is truncated or unreadable, else None


def scan_shard(location: str | Path, cache: Path | None = None) -> ScannedShard:
    """Count a shard's samples by scanning it (fetched into the cache first when it is remote or compressed).

    A truncated tar counts one sample more than it holds whole (at least that one was lost): reading it then reports
    a ``truncated_shard`` bad sample (skipped and counted, fatal with ``data.strict``) instead of the loss passing
    unseen."""
    info = located_shard(str(location), 0, cache)
    local = info.local()
    index = indexed_tar(local.path, local.error)  # remembered: this process's reader will not scan it again
    info.samples = len(index.samples) + (1 if index.error else 0)
    return ScannedShard(info, index.error)


def scanned_shard(location: str | Path, cache: Path | None = None) -> ShardInfo:
    """A shard without a manifest (see scan_shard)."""
    return scan_shard(location, cache).info


def _expand(source: str) -> list[str]:
    return list(expand_urls(source))


def _resolve_remote(source: str, cache: Path | None) -> list[ShardInfo]:
    """A URL or ``pipe:`` source: a manifest (``.../manifest.json`` or a folder URL ending in ``/``), a brace
    pattern, a glob on a listable store, or one shard."""
    if not source.startswith("pipe:") and (source.endswith("/") or source.endswith(f"/{MANIFEST}")):
        return Manifest.load_at(source if source.endswith(MANIFEST) else source + MANIFEST, cache).shards
    if "{" in source:
        locations = _expand(source)
    elif not source.startswith("pipe:") and any(c in source.split("?", 1)[0] for c in "*?["):
        locations = remote_glob(source)
        if not locations:
            raise LvuError(f"no shards found at {source}")
    else:
        locations = [source]
    return [scanned_shard(location, cache) for location in locations]


def resolve_shards(sources: str | Sequence[str], cache: str | os.PathLike | None = None) -> list[ShardInfo]:
    """Shards named by folders (with or without manifest.json), tar paths (``.tar`` or gzip-compressed), globs,
    brace patterns, URLs (a shard, a pattern, or a remote folder's manifest.json) and ``pipe:`` commands.

    Folders without a manifest (shards from other tools) are indexed by scanning; ``lvu data index`` writes one.
    Remote and compressed shards are copied into ``cache`` (see lvu.data.remote.shard_cache); without a manifest,
    every one of them is fetched here to be counted.
    """
    if isinstance(sources, str):
        sources = [sources]
    folder = shard_cache(cache)
    shards: list[ShardInfo] = []
    for source in sources:
        if is_remote(source):
            shards += _resolve_remote(source, folder)
            continue
        path = Path(source)
        if path.is_dir():
            if (path / MANIFEST).is_file():
                shards += Manifest.load(path, folder).shards
            else:
                tars = sorted(t for pattern in SHARD_GLOBS for t in path.glob(pattern))
                if not tars:
                    raise LvuError(f"{path}: no manifest.json and no .tar or .tar.gz shards in this folder")
                shards += [scanned_shard(t, folder) for t in tars]
        elif path.name == MANIFEST and path.is_file():
            shards += Manifest.load(path.parent, folder).shards
        else:
            matches = [Path(p) for p in (_expand(source) if "{" in source else sorted(glob.glob(source)))]
            if not matches and path.is_file():
                matches = [path]
            if not matches:
                raise LvuError(f"no shards found at {source} (give a shard folder, a .tar file, a glob, a pattern, "
                               f"a URL or a pipe: command)")
            for tar in matches:
                if not tar.is_file():
                    raise LvuError(f"shard {tar} not found")
                shards.append(scanned_shard(tar, folder))
    return shards


class ShardReader:
    """Random access to samples of a list of shards. Keeps a few file handles and the tar indices it has built.

    One per process (data-loader workers each build their own); not thread-safe.
    """

    def __init__(self, shards: Sequence[ShardInfo], max_open: int = 8) -> None:
        self.shards = list(shards)
        self.max_open = max_open
        self._indices: dict[int, TarIndex] = {}
        self._files: OrderedDict[int, Any] = OrderedDict()

    def index(self, shard: int) -> TarIndex:
        if shard not in self._indices:
            local = self.shards[shard].local()  # fetches a remote or compressed shard on first use
            self._indices[shard] = indexed_tar(local.path, local.error)
        return self._indices[shard]

    def _file(self, shard: int):
        handle = self._files.pop(shard, None)
        if handle is None:
            handle = open(self.shards[shard].path, "rb")  # noqa: SIM115 - kept open across reads, closed on eviction
            while len(self._files) >= self.max_open:
                self._files.popitem(last=False)[1].close()
        self._files[shard] = handle
        return handle

    def key(self, shard: int, index: int) -> str | None:
        entries = self.index(shard).samples
        return entries[index][0] if index < len(entries) else None

    def read(self, shard: int, index: int, exts: Sequence[str] | None = None) -> dict[str, Any]:
        """Raw sample ``{"__key__", "__shard__", "__index__", "__path__", ext: bytes, ...}`` (only ``exts`` when
        given): ``__shard__`` is the shard's file name for messages, ``__path__`` where it is read from."""
        info = self.shards[shard]
        entries = self.index(shard)
        if index >= len(entries.samples):
            detail = entries.error or f"it holds {len(entries.samples)} samples, the manifest says {info.samples}"
            raise BadSample("truncated_shard", f"sample {index} is missing: {detail}", shard=info.name)
        key, members = entries.samples[index]
        handle = self._file(shard)
        sample: dict[str, Any] = {"__key__": key, "__shard__": info.name, "__index__": index,
                                  "__path__": info.source or str(info.path)}  # unique where names are not
        for ext, (offset, size) in members.items():
            if exts is not None and ext not in exts:
                continue
            handle.seek(offset)
            data = handle.read(size)
            if len(data) != size:
                raise BadSample("truncated_shard", f"member {key}.{ext} is cut short", shard=info.name, key=key)
            sample[ext] = data
        return sample

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __del__(self) -> None:
        self.close()


def iter_samples(shards: Sequence[ShardInfo], exts: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every readable sample in shard order (for tools such as ``lvu data inspect``); truncation is skipped."""
    reader = ShardReader(shards)
    try:
        for shard_id in range(len(shards)):
            for index in range(len(reader.index(shard_id).samples)):
                yield reader.read(shard_id, index, exts)
    finally:
        reader.close()


def parse_json(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample's annotation; BadSample with reason ``missing_json`` / ``bad_json`` when absent or malformed."""
    raw = sample.get("json")
    if raw is None:
        raise BadSample("missing_json", "sample has no .json annotation", shard=sample.get("__shard__", ""),
                        key=sample.get("__key__", ""))
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadSample("bad_json", f"annotation is not valid JSON ({exc})", shard=sample.get("__shard__", ""),
                        key=sample.get("__key__", "")) from None
    if not isinstance(value, dict):
        raise BadSample("bad_json", "annotation JSON is not an object", shard=sample.get("__shard__", ""),
                        key=sample.get("__key__", ""))
    return value
