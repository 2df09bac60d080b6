"""``lvu data embed``: video shards -> clip-embedding shards (LV-MAE's input, paper Sec. 3.1).

Each video is cut into consecutive non-overlapping segments (5 s by default; a tail of at least half a segment is
kept) or, with ``segments="shots"``, into its shots (the paper's Table 9 variant: variable-length clips cut where
:mod:`lvu.data.shots` finds a shot boundary; 5-s clips did better there, so they stay the default); each segment is
embedded by a frozen encoder (:mod:`lvu.models.clip_encoders`), and the result is written as a feature sample:
``{key}.npy`` ``[clips, D]`` + ``{key}.json`` (clip start/end times, duration, source labels and splits). Videos are
decoded in worker processes; clips from many videos share each encoder batch. Output shard ``i`` holds input shard
``i``'s videos, and is renamed into place only when complete, so an interrupted run resumes by skipping finished
shards. Videos that cannot be decoded, or are too short for one clip, are skipped and listed in ``skipped.jsonl``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lvu.data.decoders import open_video
from lvu.data.sampling import SamplerConfig, SamplerName, frames_in_segments, sample_frames, shot_bounds
from lvu.data.shards import (
    BadSample,
    Manifest,
    ShardInfo,
    ShardReader,
    count_samples,
    iter_samples,
    parse_json,
    resolve_shards,
    write_shard,
)
from lvu.data.shots import ShotConfig, detect_shots
from lvu.data.video import VideoError
from lvu.data.writing import SKIPPED_FILE, Skipped, read_skips, write_skips
from lvu.errors import LvuError
from lvu.models.clip_encoders import ClipEncoder

KEPT_ANNOTATION = ("labels", "splits", "duration_s", "fps", "source", "caption")


@dataclass
class EmbedReport:
    manifest: Manifest
    written: int
    skipped: list[Skipped]
    reused_shards: int
    dim: int


class _Clips(IterableDataset):
    """Decodes the videos of one shard into clips; worker ``w`` takes videos ``w, w+W, ...``."""

    def __init__(self, shard: ShardInfo, sampler: SamplerConfig, short_side: int, shots: ShotConfig | None) -> None:
        super().__init__()
        self.shard, self.sampler, self.short_side, self.shots = shard, sampler, short_side, shots

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader = ShardReader([self.shard])
        try:
            for index in range(worker, len(reader.index(0).samples), workers):
                yield self._decode(reader, index)
        finally:
            reader.close()

    def _decode(self, reader: ShardReader, index: int) -> dict[str, Any]:
        key = reader.key(0, index) or f"#{index}"
        try:
            raw = reader.read(0, index)
            annotation = parse_json(raw)
            video = open_video(raw)
            meta = video.info
            if self.shots is None:
                picked = sample_frames(self.sampler, meta)
            else:
                bounds = shot_bounds(detect_shots(video, self.shots), meta.duration_s)
                picked = frames_in_segments(meta, bounds, self.sampler.frames_per_segment)
            scale = self.short_side / min(meta.width, meta.height)
            size = (max(2, round(meta.width * scale)), max(2, round(meta.height * scale)))
            frames = torch.from_numpy(video.read(picked.indices, size=size))
        except (BadSample, VideoError) as exc:
            return {"index": index, "key": key, "skip": Skipped(key, exc.reason, str(exc))}
        clips = frames.view(len(picked.segments), self.sampler.frames_per_segment, *frames.shape[1:])
        kept = {k: annotation[k] for k in KEPT_ANNOTATION if k in annotation}
        kept["duration_s"] = round(meta.duration_s, 3)
        return {"index": index, "key": key, "clips": clips, "bounds": picked.segments.round(3).tolist(),
                "annotation": kept}


def _embed_shard(encoder, clips: _Clips, batch_size: int, workers: int, save_dtype: str,
                 progress, task) -> tuple[list[tuple[str, dict[str, Any]]], list[Skipped]]:
    loader = DataLoader(clips, batch_size=None, num_workers=workers)
    results: dict[int, tuple[str, dict[str, Any]]] = {}
    skipped: list[Skipped] = []
    waiting: dict[int, dict[str, Any]] = {}  # videos whose clips are not all embedded yet
    queue: list[tuple[int, int, torch.Tensor]] = []  # (video index, clip number, clip)

    def flush(force: bool) -> None:
        while queue and (force or len(queue) >= batch_size):
            batch, queue[:] = queue[:batch_size], queue[batch_size:]
            embeddings = encoder.embed(torch.stack([clip for _, _, clip in batch])).cpu().numpy()
            for (video, clip, _), row in zip(batch, embeddings, strict=True):
                item = waiting[video]
                item["out"][clip] = row
                item["left"] -= 1
                if item["left"] == 0:
                    del waiting[video]
                    item["annotation"]["clips"] = item["bounds"]
                    results[video] = (item["key"], {"npy": item["out"].astype(save_dtype),
                                                    "json": item["annotation"]})

    for item in loader:
        progress.advance(task)
        if "skip" in item:
            skipped.append(item["skip"])
            continue
        clips = item.pop("clips")
        item.update(out=np.zeros((len(clips), encoder.dim), np.float32), left=len(clips))
        waiting[item["index"]] = item
        queue.extend((item["index"], n, clip) for n, clip in enumerate(clips))
        flush(force=False)
    flush(force=True)
    return [results[i] for i in sorted(results)], sorted(skipped, key=lambda s: s.item)


def embed_videos(sources: list[str], out: Path, encoder_path: str | Path, *, segment_seconds: float = 5.0,
                 frames_per_clip: int | None = None, batch_size: int = 64, workers: int = 1, device: str = "auto",
                 save_dtype: str = "float16", quiet: bool = False, segments: str = "fixed",
                 shots: ShotConfig | None = None) -> EmbedReport:
    """Embed every video of ``sources`` clip by clip and write feature shards to ``out``.

    ``segments``: ``fixed`` (consecutive ``segment_seconds`` clips) or ``shots`` (one clip per shot, found with
    ``shots``, default :class:`ShotConfig` settings)."""

    if segment_seconds <= 0:
        raise LvuError("--segment-seconds must be positive")
    if segments not in ("fixed", "shots"):
        raise LvuError(f"--segments must be fixed or shots, got {segments!r}")
    shot_cfg = (shots or ShotConfig()) if segments == "shots" else None
    if batch_size <= 0 or (frames_per_clip is not None and frames_per_clip <= 0):
        raise LvuError("--batch-size and --frames-per-clip must be positive")
    encoder = ClipEncoder.from_pretrained(encoder_path, device=device)
    frames = frames_per_clip or encoder.num_frames or 8
    if encoder.num_frames is not None and frames != encoder.num_frames:
        raise LvuError(f"{encoder.family} takes {encoder.num_frames} frames per clip; --frames-per-clip {frames} "
                       f"does not fit")
    sampler = SamplerConfig(name=SamplerName.segments, segment_seconds=segment_seconds, frames_per_segment=frames)
    shards = resolve_shards(sources)
    out.mkdir(parents=True, exist_ok=True)
    # Skips of shards kept from an earlier run stay listed; recomputed shards replace theirs.
    skips: dict[int, list[Skipped]] = read_skips(out / SKIPPED_FILE)
    written_shards: list[ShardInfo] = []
    written = reused = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=quiet) as progress:
        what = "shots" if shot_cfg else f"{segment_seconds:g}-s clips"
        task = progress.add_task(f"embedding {what}", total=sum(s.samples for s in shards))
        for number, shard in enumerate(shards):
            path = out / f"shard-{number:06d}.tar"
            if path.is_file():
                written_shards.append(ShardInfo(path, count_samples(path)))
                reused += 1
                progress.advance(task, shard.samples)
                continue
            clips = _Clips(shard, sampler, encoder.image_size, shot_cfg)
            samples, skipped = _embed_shard(encoder, clips, batch_size, workers, save_dtype, progress, task)
            skips[number] = skipped
            if samples:
                write_shard(path, samples)
                written_shards.append(ShardInfo(path, len(samples)))
                written += len(samples)
            write_skips(out / SKIPPED_FILE, skips)
    write_skips(out / SKIPPED_FILE, {n: s for n, s in skips.items() if n < len(shards)})
    manifest = Manifest(written_shards, kind="features", extra={
        "encoder": str(encoder_path), "encoder_family": encoder.family, "dim": encoder.dim,
        "segments": segments, "segment_seconds": None if shot_cfg else segment_seconds, "frames_per_clip": frames,
        **({"shots": dataclasses.asdict(shot_cfg)} if shot_cfg else {}), "sources": [str(s) for s in sources]})
    manifest.save(out)
    for source in sources:
        label_maps = Path(source) / "label_maps.json"
        if label_maps.is_file():
            shutil.copyfile(label_maps, out / "label_maps.json")
            break
    listed = [s for n, v in sorted(skips.items()) if n < len(shards) for s in v]
    return EmbedReport(manifest, written, listed, reused, encoder.dim)


def feature_dim(sources: list[str]) -> int:
    """Width of the features in a feature shard set (from its manifest, else its first sample)."""
    for source in sources:
        path = Path(source)
        manifest = path / "manifest.json" if path.is_dir() else path
        if manifest.name == "manifest.json" and manifest.is_file():
            dim = json.loads(manifest.read_text()).get("extra", {}).get("dim")
            if dim:
                return int(dim)
    for raw in iter_samples(resolve_shards(sources), exts=("npy",)):
        if "npy" in raw:
            return int(np.load(io.BytesIO(raw["npy"])).shape[1])
    raise LvuError(f"no feature samples (.npy) in {', '.join(sources)}")
