"""``lvu data inspect``: what is in a shard set, what is broken, and a contact sheet to look at."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from rich.progress import Progress

from lvu.data.decoders import IMAGE_EXTS, VIDEO_EXTS, FeatureDecoder, decode_image, open_video
from lvu.data.sampling import SamplerConfig, SamplerName, sample_frames
from lvu.data.shards import BadSample, ShardInfo, ShardReader, parse_json, resolve_shards
from lvu.data.video import VideoError

ANNOTATION_KINDS = ("conversations", "caption", "labels", "mc", "segments")
MAX_LISTED = 50


def _check(raw: dict[str, Any], annotation: dict[str, Any]) -> float | None:
    """Decode enough of the sample to know it is usable; return its duration when it is a video."""
    if "npy" in raw:
        FeatureDecoder()(raw, np.random.default_rng(0))
        return annotation.get("duration_s")
    image = next((e for e in IMAGE_EXTS if e in raw), None)
    if image and not any(e in raw for e in VIDEO_EXTS):
        decode_image(raw[image])
        return None
    video = open_video(raw)
    video.read([0])
    return float(video.info.duration_s)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"count": len(values), "min": float(array.min()), "mean": float(array.mean()),
            "median": float(np.median(array)), "max": float(array.max()), "total_hours": float(array.sum() / 3600)}


def inspect_shards(sources: list[str], *, decode: bool = True, quiet: bool = False) -> dict[str, Any]:
    """Counts, keys, durations, annotation kinds and unreadable samples of a shard set."""
    shards = resolve_shards(sources)
    expected = sum(s.samples for s in shards)
    reader = ShardReader(shards)
    kinds: Counter[str] = Counter()
    exts: Counter[str] = Counter()
    label_tasks: Counter[str] = Counter()
    durations: list[float] = []
    unreadable: list[dict[str, str]] = []
    reasons: Counter[str] = Counter()
    keys: list[str] = []
    seen = 0
    with Progress(disable=quiet, transient=True) as progress:
        task = progress.add_task("inspecting", total=expected)
        for shard_id, shard in enumerate(shards):
            index = reader.index(shard_id)
            if index.error or len(index.samples) < shard.samples:
                missing = shard.samples - len(index.samples)
                reasons["truncated_shard"] += max(missing, 1)
                unreadable.append({"shard": shard.name, "key": "", "reason": "truncated_shard",
                                   "message": index.error or f"{missing} sample(s) missing"})
            for position in range(len(index.samples)):
                progress.advance(task)
                seen += 1
                raw = reader.read(shard_id, position)
                key = raw["__key__"]
                keys.append(key)
                exts.update(e for e in raw if not e.startswith("__"))
                try:
                    annotation = parse_json(raw)
                    kinds.update(k for k in ANNOTATION_KINDS if annotation.get(k))
                    label_tasks.update(list(annotation.get("labels") or {}))
                    duration = _check(raw, annotation) if decode else annotation.get("duration_s")
                    if duration is not None:
                        durations.append(float(duration))
                except (BadSample, VideoError) as exc:
                    reasons[exc.reason] += 1
                    if len(unreadable) < MAX_LISTED:
                        unreadable.append({"shard": shard.name, "key": key, "reason": exc.reason, "message": str(exc)})
    reader.close()
    return {
        "shards": len(shards),
        "samples": expected,
        "readable": seen - sum(v for k, v in reasons.items() if k != "truncated_shard"),
        "unreadable": sum(reasons.values()),
        "unreadable_by_reason": dict(reasons),
        "unreadable_samples": unreadable,
        "duration_s": _stats(durations),
        "annotation_kinds": dict(kinds),
        "label_tasks": dict(label_tasks),
        "members": dict(exts),
        "unique_keys": len(set(keys)),
        "first_keys": keys[:5],
    }


def format_report(report: dict[str, Any]) -> str:
    d = report["duration_s"]
    lines = [
        f"shards        {report['shards']}",
        f"samples       {report['samples']} (readable {report['readable']}, unreadable {report['unreadable']})",
        f"keys          {report['unique_keys']} unique; first: {', '.join(report['first_keys'])}",
        f"members       {', '.join(f'{k} x{v}' for k, v in sorted(report['members'].items()))}",
    ]
    if d.get("count"):
        lines.append(f"duration_s    min {d['min']:.1f}  mean {d['mean']:.1f}  median {d['median']:.1f}  "
                     f"max {d['max']:.1f}  total {d['total_hours']:.2f} h")
    kinds = report["annotation_kinds"]
    lines.append("annotations   " + (", ".join(f"{k} x{v}" for k, v in kinds.items()) or "none"))
    if report["label_tasks"]:
        lines.append("label tasks   " + ", ".join(f"{k} x{v}" for k, v in sorted(report["label_tasks"].items())))
    if report["unreadable"]:
        lines.append("unreadable    " + ", ".join(f"{k} x{v}" for k, v in report["unreadable_by_reason"].items()))
        lines += [f"  {u['shard']} {u['key']}: {u['reason']}: {u['message']}" for u in report["unreadable_samples"]]
    return "\n".join(lines)


def contact_sheet(shards: list[ShardInfo], out: Path, *, rows: int = 8, columns: int = 6, height: int = 96) -> int:
    """A PNG grid: one readable video per row, ``columns`` uniformly sampled frames with their timestamps."""
    reader = ShardReader(shards)
    tiles: list[tuple[str, list[tuple[np.ndarray, float]]]] = []
    sampler = SamplerConfig(name=SamplerName.uniform, num_frames=columns, allow_repeats=True)
    for shard_id in range(len(shards)):
        for position in range(len(reader.index(shard_id).samples)):
            if len(tiles) >= rows:
                break
            raw = reader.read(shard_id, position)
            try:
                video = open_video(raw)
                picked = sample_frames(sampler, video.info)
                info = video.info
                width = max(2, round(info.width * height / info.height))
                frames = video.read(picked.indices, size=(width, height))
            except (BadSample, VideoError):
                continue
            tiles.append((raw["__key__"], list(zip(frames, picked.timestamps.tolist(), strict=True))))
    reader.close()
    if not tiles:
        return 0
    label_w, pad = 160, 2
    tile_w = max(f.shape[1] for _, row in tiles for f, _ in row)
    sheet = Image.new("RGB", (label_w + columns * (tile_w + pad), len(tiles) * (height + pad)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, (key, row) in enumerate(tiles):
        y = r * (height + pad)
        draw.text((4, y + height // 2 - 6), key[:24], fill=(230, 230, 230))
        for c, (frame, t) in enumerate(row):
            x = label_w + c * (tile_w + pad)
            sheet.paste(Image.fromarray(frame), (x, y))
            draw.rectangle([x, y, x + 44, y + 12], fill=(0, 0, 0))
            draw.text((x + 2, y + 1), f"{t:6.1f}s", fill=(255, 255, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return len(tiles)


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
