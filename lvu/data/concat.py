"""FiLA-Video's long-video synthesis (paper Sec. 3.3): join short captioned videos into 5-30 minute videos.

Each clip becomes one scene of a long video, and the long video's ``caption`` lists each clip's caption with its
time range on the joined timeline (``12.0s-40.5s: ...``), with its duration; its conversation asks for that caption.
Part offsets come from the probed durations of the parts (end of last frame), the same numbers the loader uses, so
caption times and frame times agree. Two ways to store it (``join``):

* ``mp4`` (default): one real mp4 per long video, the clips decoded and re-encoded (H.264) at one frame size, every
  frame at its own time (variable frame rate), so clips of different frame rates keep their timing. Stock tools and
  ``webdataset`` read it as any video. It costs about the clips' decoding plus encoding time.
* ``parts``: a *composite* sample holding the clips' original mp4 bytes (``part000.mp4``, ``part001.mp4``, ...),
  which the loader (:class:`~lvu.data.video.CompositeVideo`) plays back to back: no re-encoding (a copy of the bytes,
  no second lossy generation), but only lvu reads it as one video.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from lvu.data.loader import SampleSet
from lvu.data.shards import BadSample, ShardReader, parse_json, resolve_shards
from lvu.data.video import VideoError, VideoFile, encode_timed_mp4
from lvu.data.writing import Skipped, WriteReport, write_dataset
from lvu.errors import LvuError

CAPTION_PROMPT = "<video>\nDescribe this video in detail, with the time range of each part."


def _caption_of(annotation: dict[str, Any]) -> str | None:
    if annotation.get("caption"):
        return str(annotation["caption"])
    conversations = annotation.get("conversations") or []
    answers = [turn.get("value") for turn in conversations if turn.get("from") == "gpt"]
    return str(answers[-1]) if answers else None


def plan_long_videos(durations: np.ndarray, min_s: float, max_s: float, seed: int) -> list[list[int]]:
    """Groups of part positions (each part used once) whose total duration lies in [min_s, max_s]."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(durations))
    groups, current, total = [], [], 0.0
    target = rng.uniform(min_s, max_s)
    for position in order:
        d = float(durations[position])
        if d > max_s:
            continue
        if total + d > max_s and total >= min_s:
            groups.append(current)
            current, total, target = [], 0.0, rng.uniform(min_s, max_s)
        if total + d > max_s:
            continue  # would overshoot an unfinished group: leave this part out
        current.append(int(position))
        total += d
        if total >= target:
            groups.append(current)
            current, total, target = [], 0.0, rng.uniform(min_s, max_s)
    if current and total >= min_s:  # the last group fell short of its random target but is long enough
        groups.append(current)
    return groups


_STATE: dict[str, Any] = {}


def _make(index: int) -> tuple[str, dict[str, Any]] | Skipped:
    samples: SampleSet = _STATE["samples"]
    group = _STATE["groups"][index]
    reader = _STATE.setdefault("reader", ShardReader(samples.shards))
    fields: dict[str, Any] = {}
    parts, sentences, clips, offset = [], [], [], 0.0
    for n, position in enumerate(group):
        raw = reader.read(int(samples.shard_ids[position]), int(samples.indices[position]))
        annotation = parse_json(raw)
        duration = _STATE["durations"][position]
        caption = _caption_of(annotation) or ""
        clips.append((raw["mp4"], offset))
        if _STATE["join"] == "parts":
            fields[f"part{n:03d}.mp4"] = raw["mp4"]
        parts.append({"key": raw["__key__"], "shard": raw["__shard__"], "start_s": round(offset, 3),
                      "end_s": round(offset + duration, 3), "caption": caption})
        sentences.append(f"{offset:.1f}s-{offset + duration:.1f}s: {caption}")
        offset += duration
    if _STATE["join"] == "mp4":
        fields["mp4"] = encode_timed_mp4(_joined_frames(clips, _STATE["size"]))
    caption = "\n".join(sentences)
    fields["json"] = {
        "caption": caption,
        "conversations": [{"from": "human", "value": CAPTION_PROMPT}, {"from": "gpt", "value": caption}],
        "parts": parts,
        "duration_s": round(offset, 3),
        "source": "concat",
    }
    return f"long_{_STATE['seed']}_{index:06d}", fields


def _joined_frames(clips: list[tuple[bytes, float]], size: tuple[int, int]):
    """Every frame of the clips, resized to ``size``, at its time on the joined timeline."""
    for data, offset in clips:
        for frame, seconds in VideoFile(data).iter_frames(size=size):
            yield frame, offset + seconds


def concat(sources: list[str], out: Path, *, min_minutes: float = 5, max_minutes: float = 30, seed: int = 0,
           maxcount: int = 10, quiet: bool = False, join: str = "mp4",
           size: tuple[int, int] | None = None) -> WriteReport:
    """Write long videos built from the captioned videos in ``sources``.

    Args:
        join: ``mp4`` (one re-encoded mp4 per long video) or ``parts`` (the clips' own bytes; see the module
            docstring).
        size: ``(width, height)`` of joined mp4s (even); default the first usable clip's size, rounded down to even.
    """
    if not 0 < min_minutes <= max_minutes:
        raise LvuError(f"--minutes: need 0 < MIN <= MAX, got {min_minutes} {max_minutes}")
    if join not in ("mp4", "parts"):
        raise LvuError(f"--join: mp4 or parts, got {join!r}")
    if size is not None and (size[0] % 2 or size[1] % 2 or min(size) <= 0):
        raise LvuError(f"--size: width and height must be positive and even (H.264 yuv420p), got {size[0]}x{size[1]}")
    samples = SampleSet(resolve_shards(sources))
    reader = ShardReader(samples.shards)
    durations = np.zeros(len(samples))
    usable = []
    skipped = 0
    with Progress(disable=quiet, transient=True) as progress:
        task = progress.add_task("probing parts", total=len(samples))
        for position in range(len(samples)):
            progress.advance(task)
            try:
                raw = reader.read(int(samples.shard_ids[position]), int(samples.indices[position]))
                if "mp4" not in raw or _caption_of(parse_json(raw)) is None:
                    skipped += 1
                    continue
                info = VideoFile(raw["mp4"]).info
                durations[position] = info.duration_s
                usable.append(position)
                if size is None:
                    size = (info.width // 2 * 2, info.height // 2 * 2)
            except (BadSample, VideoError):
                skipped += 1
    reader.close()
    usable_idx = np.asarray(usable, dtype=np.int64)
    groups = [[int(usable_idx[p]) for p in g] for g in
              plan_long_videos(durations[usable_idx], min_minutes * 60, max_minutes * 60, seed)]
    if not groups:
        total = durations.sum() / 60
        raise LvuError(f"not enough captioned video to build one {min_minutes:g}-minute video "
                       f"({total:.1f} minutes usable, {skipped} samples without mp4 or caption)")
    _STATE.clear()
    _STATE.update(samples=samples, groups=groups, durations=durations, seed=seed, join=join, size=size)
    try:
        report = write_dataset(out, len(groups), _make, maxcount=maxcount, kind="video",
                               extra={"concat_seed": seed, "minutes": [min_minutes, max_minutes], "join": join},
                               description="joining", quiet=quiet)
    finally:
        reader_ = _STATE.pop("reader", None)
        if reader_ is not None:
            reader_.close()
        _STATE.clear()
    (out / "concat_parts.json").write_text(json.dumps({"parts_skipped_without_caption_or_mp4": skipped}) + "\n")
    return report
