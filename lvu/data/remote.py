"""Shards that are not plain local tar files: URLs, ``pipe:`` commands and gzip-compressed tars.

Each is copied whole into a local cache (decompressed on the way) the first time a process needs it, then read like
any local shard. Why copy instead of streaming: the loader plans each epoch as (shard, index) pairs and reads samples
by offset, which is what makes mid-epoch resume exact and O(1), independent of the worker count, and lets a bad sample
be replaced by a planned other one; a stream cannot seek. A shard is fetched once per cache folder (on node-local
disk: once per machine): ranks and loader workers that want the same shard wait on one lock (``fcntl.flock``) while
the first of them fetches it.

* ``pipe:CMD``: CMD's standard output, through webdataset's own opener (the convention webdataset users know); a
  non-zero exit status is a failed fetch.
* ``SCHEME://...`` (``http(s)``, ``s3``, ``gs``, ``file``, ...): ``fsspec.open``. HTTP comes with fsspec's
  ``aiohttp`` backend; object stores need their fsspec package (``s3fs``, ``gcsfs``, ...), named in the error when
  missing.
* Any fetched stream that starts with gzip's magic bytes (a ``.tar.gz`` / ``.tgz`` shard) is decompressed into the
  cache, whatever its name says. A broken or cut gzip stream keeps what decompressed; the reason is kept beside the
  copy and reported as a ``truncated_shard`` wherever the shard is read, exactly like a truncated local tar.

A fetch that fails (no such file, an HTTP error or timeout, a command failing) is retried, then stops the run with
one line naming the shard: that is missing infrastructure, not bad data, and a resumed run must see the same samples.
A remote gzip stream that ends early is fetched again; cut every time, it is the file itself (a truncated shard).
Copies of URLs and commands are reused until deleted (the cache key is the location string, not the remote
content); a local file's copy is renewed when the file changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lvu.errors import LvuError

log = logging.getLogger("lvu.data")

ENV_CACHE = "LVU_SHARD_CACHE"
GZIP_MAGIC = b"\x1f\x8b"
GZIP_SUFFIXES = (".gz", ".tgz")
FETCH_TRIES = 3
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 1 << 20


def is_remote(location: str) -> bool:
    """A ``pipe:`` command or a URL with a scheme (not a local path)."""
    return location.startswith("pipe:") or bool(_SCHEME.match(location))


def is_gzip_name(location: str) -> bool:
    return location.split("?", 1)[0].endswith(GZIP_SUFFIXES)


def shard_cache(configured: str | os.PathLike | None = None) -> Path:
    """Where fetched shards go: ``configured`` (``data.shard_cache``), else ``$LVU_SHARD_CACHE``, else
    ``~/.cache/lvu/shards``. On a cluster, point it at node-local disk."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    return Path.home() / ".cache" / "lvu" / "shards"


def display_name(location: str) -> str:
    """The file name a user recognises in messages: the shard file a URL or ``pipe:`` command names.

    ``pipe:aws s3 cp s3://b/shard-000001.tar -`` -> ``shard-000001.tar``; ``https://h/dl?id=3`` -> ``dl?id=3``."""
    if location.startswith("pipe:"):
        words = [w for w in location[5:].split() if not w.startswith("-") and w not in ("|", "&&", ";")]
        named = [w for w in words if ".tar" in w] or [w for w in words if "/" in w] or words or [location]
        return named[-1].rstrip("/").split("/")[-1]
    path, _, query = location.partition("?")
    tail = path.rstrip("/").split("/")[-1] or location
    return f"{tail}?{query}" if query and ".tar" not in tail else tail


def cache_entry(location: str, cache: Path) -> Path:
    """The local copy of ``location``: a hash of what identifies its content (distinct sources never share a copy)
    plus its readable name, without the compression suffix. A URL or command is identified by its text (its copy is
    reused until deleted); a local file by its absolute path, size and modification time, so a file rebuilt in place
    gets a fresh copy and two projects' same relative path never share one."""
    name = display_name(location)
    for suffix, plain in ((".tar.gz", ".tar"), (".tgz", ".tar"), (".gz", "")):
        if name.endswith(suffix):
            name = name[: -len(suffix)] + plain
            break
    identity = location
    if not is_remote(location):
        path = Path(location).resolve()
        stat = path.stat()
        identity = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha1(identity.encode()).hexdigest()[:16]
    return cache / f"{digest}-{re.sub(r'[^A-Za-z0-9._?=-]', '_', name).replace('?', '_')}"


def open_stream(location: str) -> IO[bytes]:
    """A binary stream of ``location``'s bytes (a local path, a URL or a ``pipe:`` command)."""
    if location.startswith("pipe:"):
        gopen = importlib.import_module("webdataset.gopen").gopen  # the package's gopen name is shadowed
        return gopen(location, "rb")
    if not is_remote(location):
        return open(location, "rb")
    import fsspec  # here, not at the top: only remote shards need it (and it is slow to import)

    options: dict = {}
    if location.startswith(("http://", "https://")):
        import aiohttp  # fsspec's HTTP backend (a dependency of fsspec[http], which Lightning requires)

        # A plain streaming GET (block_size 0): fsspec's default asks for byte ranges, which servers may ignore.
        # No limit on the whole download (aiohttp's default total of 5 minutes fails every large shard), only on
        # a stalled read.
        options = {"block_size": 0, "client_kwargs": {"timeout": aiohttp.ClientTimeout(total=None, sock_read=120)}}
    try:
        return fsspec.open(location, "rb", **options).open()
    except ImportError as exc:  # fsspec names the package a scheme needs ("Install s3fs to access S3")
        raise LvuError(f"cannot read {location}: {exc}") from None
    except ValueError as exc:
        raise LvuError(f"cannot read {location}: {exc}") from None


def read_text(location: str) -> str:
    with contextlib.closing(open_stream(location)) as stream:
        return stream.read().decode()


@dataclass
class Fetched:
    path: Path
    error: str | None  # why the copy holds less than the source (a broken gzip stream), else None


def _error_file(entry: Path) -> Path:
    return entry.with_name(entry.name + ".error")


def _copy(source: IO[bytes], target: IO[bytes]) -> str | None:
    """Copy ``source`` into ``target``, gunzipping when the stream starts with gzip's magic bytes. Returns why the
    gzip stream ended badly, or None."""
    head = source.read(2)
    if head != GZIP_MAGIC:
        target.write(head)
        shutil.copyfileobj(source, target, _CHUNK)
        return None
    inflate = zlib.decompressobj(wbits=31)  # the gzip container; a new one per member (``cat a.gz b.gz``)
    chunk = head
    try:
        while chunk:
            target.write(inflate.decompress(chunk))
            if inflate.eof:
                chunk = inflate.unused_data or source.read(_CHUNK)
                if chunk:
                    inflate = zlib.decompressobj(wbits=31)
                continue
            chunk = source.read(_CHUNK)
            if not chunk:
                return "the gzip stream ends before its end marker (the compressed shard is cut short)"
    except zlib.error as exc:
        return f"the gzip stream is corrupt ({exc})"
    return None


def fetch(location: str, entry: Path) -> Fetched:
    """``location``'s bytes at ``entry`` (decompressed), fetching them unless another process already did.

    Any failure is retried (HTTP errors, timeouts, a command failing), then stops the run with one line. A remote
    gzip stream that ends early is fetched again too (a cut in transit heals); cut every time, it is the file itself,
    kept as far as it decompresses and reported as a truncated shard, as a cut local gzip file is at once."""
    if entry.is_file():
        return _cached(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch per cache folder; the others wait, then read the copy
        if entry.is_file():
            return _cached(entry)
        for stale in entry.parent.glob(f".{entry.name}.*.partial"):  # left by a fetch that was killed
            stale.unlink(missing_ok=True)
        for attempt in range(1, FETCH_TRIES + 1):
            try:
                fetched = _fetch_once(location, entry)
            except Exception as exc:  # whatever the transport raises: the same retries, then one line
                why = str(exc) if isinstance(exc, LvuError) else f"{type(exc).__name__}: {exc}"
            else:
                if not (fetched.error and is_remote(location)) or attempt == FETCH_TRIES:
                    return fetched
                why = fetched.error
                entry.unlink(missing_ok=True)
                _error_file(entry).unlink(missing_ok=True)
            if attempt == FETCH_TRIES:
                raise LvuError(f"cannot fetch shard {location} ({FETCH_TRIES} tries): {why}")
            log.warning("fetching shard %s failed (%s); trying again", location, why)
            time.sleep(2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _fetch_once(location: str, entry: Path) -> Fetched:
    partial = entry.with_name(f".{entry.name}.{os.getpid()}.partial")
    try:
        started = time.monotonic()
        with contextlib.closing(open_stream(location)) as source, open(partial, "wb") as target:
            # Decompressed when the bytes are gzip, whatever the name says: a server may have undone the
            # compression already (Content-Encoding: gzip), and a plain tar named .gz is still a tar.
            error = _copy(source, target)
        if error:
            _error_file(entry).write_text(error + "\n")
        else:
            _error_file(entry).unlink(missing_ok=True)
        os.replace(partial, entry)
        log.info("fetched shard %s (%.1f MB, %.1f s)", display_name(location), entry.stat().st_size / 1e6,
                 time.monotonic() - started)
        return Fetched(entry, error)
    finally:
        partial.unlink(missing_ok=True)


def _cached(entry: Path) -> Fetched:
    error_file = _error_file(entry)
    return Fetched(entry, error_file.read_text().strip() if error_file.is_file() else None)


def load_manifest_payload(location: str) -> dict[str, Any]:
    try:
        return json.loads(read_text(location))
    except json.JSONDecodeError as exc:
        raise LvuError(f"{location} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise LvuError(f"cannot read {location}: {type(exc).__name__}: {exc}") from None


def remote_glob(pattern: str) -> list[str]:
    """URLs matching a glob on a listable filesystem (object stores, ``file://``; not HTTP)."""
    import fsspec  # as in open_stream

    try:
        fs, path = fsspec.core.url_to_fs(pattern)
        return sorted(fs.unstrip_protocol(p) for p in fs.glob(path))
    except (ImportError, ValueError, NotImplementedError, OSError) as exc:
        raise LvuError(f"cannot list {pattern}: {exc}") from None
