"""FiLA-Video's long-video synthesis (paper Sec. 3.3): join short captioned videos into 5-30 minute videos.

Each long video is stored as a *composite* sample: its parts' original mp4 bytes as members ``part000.mp4``,
``part001.mp4``, ... plus a json whose ``caption`` lists each part's caption with its time range on the joined
timeline. Re-encoding 5-30 minute videos would cost minutes of CPU each and another lossy generation; the composite
costs a copy of the bytes, and the loader (:class:`~lvu.data.video.CompositeVideo`) decodes from the parts with
exact timestamps. Part offsets come from the probed durations of the parts (end of last frame), the same numbers
the loader uses, so caption times and frame times agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from lvu.data.loader import SampleSet
from lvu.data.shards import BadSample, ShardReader, parse_json, resolve_shards
from lvu.data.video import VideoError, VideoFile
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
    parts, sentences, offset = [], [], 0.0
    for n, position in enumerate(group):
        raw = reader.read(int(samples.shard_ids[position]), int(samples.indices[position]))
        annotation = parse_json(raw)
        duration = _STATE["durations"][position]
        caption = _caption_of(annotation) or ""
        fields[f"part{n:03d}.mp4"] = raw["mp4"]
        parts.append({"key": raw["__key__"], "shard": raw["__shard__"], "start_s": round(offset, 3),
                      "end_s": round(offset + duration, 3), "caption": caption})
        sentences.append(f"{offset:.1f}s-{offset + duration:.1f}s: {caption}")
        offset += duration
    caption = "\n".join(sentences)
    fields["json"] = {
        "caption": caption,
        "conversations": [{"from": "human", "value": CAPTION_PROMPT}, {"from": "gpt", "value": caption}],
        "parts": parts,
        "duration_s": round(offset, 3),
        "source": "concat",
    }
    return f"long_{_STATE['seed']}_{index:06d}", fields


def concat(sources: list[str], out: Path, *, min_minutes: float = 5, max_minutes: float = 30, seed: int = 0,
           maxcount: int = 10, quiet: bool = False) -> WriteReport:
    """Write composite long videos built from the captioned videos in ``sources``."""
    if not 0 < min_minutes <= max_minutes:
        raise LvuError(f"--minutes: need 0 < MIN <= MAX, got {min_minutes} {max_minutes}")
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
                durations[position] = VideoFile(raw["mp4"]).info.duration_s
                usable.append(position)
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
    _STATE.update(samples=samples, groups=groups, durations=durations, seed=seed)
    try:
        report = write_dataset(out, len(groups), _make, maxcount=maxcount, kind="video",
                               extra={"concat_seed": seed, "minutes": [min_minutes, max_minutes]},
                               description="joining", quiet=quiet)
    finally:
        reader_ = _STATE.pop("reader", None)
        if reader_ is not None:
            reader_.close()
        _STATE.clear()
    (out / "concat_parts.json").write_text(json.dumps({"parts_skipped_without_caption_or_mp4": skipped}) + "\n")
    return report
