"""Frame samplers: which frames of a video a model sees, with their timestamps.

Samplers work on frame indices over the exact frame times of :class:`~lvu.data.video.VideoInfo`, so returned
timestamps are the presentation times of the frames that are actually decoded (not rounded guesses). Randomised
samplers take a ``numpy.random.Generator``; the loader seeds it per sample, so results do not depend on how many
workers or ranks there are.

* ``uniform``: N frames evenly spread over the video (LLaVA-style ``linspace`` over frame indices).
* ``fps``: one frame every 1/fps seconds, falling back to ``uniform`` when that exceeds ``num_frames``
  (LLaVA-OneVision / LLaVA-Video).
* ``random_interval``: a random count in [min_frames, max_frames], then one random frame per equal interval
  (LinVT training, 40-120 frames).
* ``multi_rate``: ``num_frames`` uniform frames in consecutive groups of ``group_size`` (FiLA-Video stage 4:
  96 frames, every three merged into one).
* ``segments``: consecutive non-overlapping clips of ``segment_seconds`` with ``frames_per_segment`` frames each
  (LV-MAE: 5-second clips).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from lvu.data.video import VideoError, VideoInfo


class SamplerName(str, Enum):
    uniform = "uniform"
    fps = "fps"
    random_interval = "random_interval"
    multi_rate = "multi_rate"
    segments = "segments"


@dataclass
class SamplerConfig:
    """Frame sampling for one task (the recipe's ``data.sampler`` section)."""

    name: SamplerName = SamplerName.uniform
    """uniform, fps, random_interval, multi_rate or segments (see lvu.data.sampling)."""
    num_frames: int = 32
    """uniform / multi_rate: frames to take; fps: the upper bound."""
    fps: float = 1.0
    """fps: target frames per second."""
    min_frames: int = 40
    """random_interval: the fewest frames of the random frame count."""
    max_frames: int = 120
    """random_interval: the most frames of the random frame count."""
    group_size: int = 3
    """multi_rate: consecutive sampled frames that form one group."""
    segment_seconds: float = 5.0
    """segments: clip length in seconds."""
    frames_per_segment: int = 8
    """segments: frames per clip."""
    min_segment_fraction: float = 0.5
    """segments: the shortest tail clip kept, as a fraction of a clip."""
    allow_repeats: bool = False
    """A video with fewer frames than asked for: repeat frames (true) or reject it as too short (false)."""


@dataclass(frozen=True)
class FrameSample:
    """Chosen frames. ``groups`` (when set) gives each frame's group (multi_rate) or clip (segments) number."""

    indices: np.ndarray
    timestamps: np.ndarray
    groups: np.ndarray | None = None
    segments: np.ndarray | None = None  # [S, 2] clip start/end seconds (segments sampler)

    def __len__(self) -> int:
        return len(self.indices)


def _too_short(info: VideoInfo, needed: int, what: str) -> VideoError:
    return VideoError(
        "too_short", f"video has {info.num_frames} frames ({info.duration_s:.1f} s); {what} needs {needed}"
    )


def _linspace_indices(first: int, last: int, count: int) -> np.ndarray:
    return np.round(np.linspace(first, last, count)).astype(np.int64)


def _uniform(info: VideoInfo, count: int, allow_repeats: bool, what: str) -> np.ndarray:
    if count <= 0:
        raise ValueError("frame count must be positive")
    if info.num_frames < count and not allow_repeats:
        raise _too_short(info, count, what)
    return _linspace_indices(0, info.num_frames - 1, count)


def _make(info: VideoInfo, indices: np.ndarray, **extra) -> FrameSample:
    return FrameSample(indices=indices, timestamps=info.frame_times[indices], **extra)


def sample_frames(cfg: SamplerConfig, info: VideoInfo, rng: np.random.Generator | None = None) -> FrameSample:
    """Apply the configured sampler to a video."""
    name = SamplerName(cfg.name)
    if name == SamplerName.uniform:
        return _make(info, _uniform(info, cfg.num_frames, cfg.allow_repeats, f"uniform {cfg.num_frames}"))
    if name == SamplerName.fps:
        step = max(1, round(info.fps / cfg.fps))
        indices = np.arange(0, info.num_frames, step, dtype=np.int64)
        if len(indices) > cfg.num_frames:
            indices = _linspace_indices(0, info.num_frames - 1, cfg.num_frames)
        return _make(info, indices)
    if name == SamplerName.random_interval:
        if rng is None:
            raise ValueError("random_interval sampling needs a random generator")
        if cfg.min_frames > cfg.max_frames:
            raise ValueError("min_frames must not exceed max_frames")
        if info.num_frames < cfg.min_frames and not cfg.allow_repeats:
            raise _too_short(info, cfg.min_frames, f"random_interval [{cfg.min_frames}, {cfg.max_frames}]")
        count = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
        if not cfg.allow_repeats:
            count = min(count, info.num_frames)
        edges = np.linspace(0, info.num_frames, count + 1)
        low = np.floor(edges[:-1]).astype(np.int64)
        high = np.maximum(low + 1, np.floor(edges[1:]).astype(np.int64))
        return _make(info, np.minimum(rng.integers(low, high), info.num_frames - 1))
    if name == SamplerName.multi_rate:
        if cfg.num_frames % cfg.group_size:
            raise ValueError(
                f"multi_rate: num_frames {cfg.num_frames} is not a multiple of group_size {cfg.group_size}"
            )
        indices = _uniform(info, cfg.num_frames, cfg.allow_repeats, f"multi_rate {cfg.num_frames}")
        return _make(info, indices, groups=np.arange(cfg.num_frames) // cfg.group_size)
    return _segments(cfg, info)


def sample_window(count: int, info: VideoInfo, start_s: float, end_s: float) -> FrameSample | None:
    """``count`` frames evenly spread over the frames shown between ``start_s`` and ``end_s`` (repeated when the
    window holds fewer): a benchmark question about one stretch of a longer video (MVBench's ``start``/``end``).
    None when the window holds no frame (it lies outside the video: the caller decides what to show)."""
    if count <= 0:
        raise ValueError("frame count must be positive")
    times = info.frame_times
    inside = np.nonzero((times >= start_s) & (times <= end_s))[0]
    if len(inside) == 0:
        return None
    return _make(info, _linspace_indices(int(inside[0]), int(inside[-1]), count))


def segment_bounds(duration_s: float, segment_seconds: float, min_fraction: float) -> np.ndarray:
    """[S, 2] start/end seconds of consecutive non-overlapping clips; a short tail is kept if long enough."""
    full = int(duration_s // segment_seconds)
    starts = [k * segment_seconds for k in range(full)]
    tail = duration_s - full * segment_seconds
    if tail >= min_fraction * segment_seconds and tail > 1e-9:
        starts.append(full * segment_seconds)
    return np.array([[s, min(s + segment_seconds, duration_s)] for s in starts], dtype=np.float64).reshape(-1, 2)


def shot_bounds(shot_starts_s: np.ndarray, duration_s: float) -> np.ndarray:
    """[S, 2] start/end seconds of variable-length clips, one per shot (LV-MAE's Table 9 "shots" segments).

    ``shot_starts_s`` lists where each shot after the first begins (:func:`lvu.data.shots.detect_shots`)."""
    edges = np.concatenate([[0.0], np.asarray(shot_starts_s, dtype=np.float64), [duration_s]])
    return np.stack([edges[:-1], edges[1:]], 1)[edges[1:] > edges[:-1]]


def _segments(cfg: SamplerConfig, info: VideoInfo) -> FrameSample:
    bounds = segment_bounds(info.duration_s, cfg.segment_seconds, cfg.min_segment_fraction)
    if len(bounds) == 0:
        raise VideoError(
            "too_short",
            f"video of {info.duration_s:.2f} s has no {cfg.segment_seconds:g}-second clip "
            f"(a tail clip needs >= {cfg.min_segment_fraction * cfg.segment_seconds:g} s)",
        )
    return frames_in_segments(info, bounds, cfg.frames_per_segment)


def frames_in_segments(info: VideoInfo, bounds: np.ndarray, k: int) -> FrameSample:
    """``k`` evenly spaced frames inside each ``[S, 2]`` clip (repeats when a clip holds fewer than ``k``)."""
    first = np.searchsorted(info.frame_times, bounds[:, 0], side="left")
    last = np.searchsorted(info.frame_times, bounds[:, 1], side="left") - 1
    empty = last < first
    if empty.any():
        raise VideoError("too_short", f"clip {int(np.argmax(empty))} contains no frame (variable frame rate gap)")
    fractions = np.linspace(0.0, 1.0, k)
    indices = np.round(first[:, None] + (last - first)[:, None] * fractions[None, :]).astype(np.int64)
    groups = np.repeat(np.arange(len(bounds)), k)
    return _make(info, indices.reshape(-1), groups=groups, segments=bounds)


def time_instruction(timestamps, duration_s: float, *, style: str = "fila") -> str:
    """The sentence that tells a video-LLM when its frames were taken.

    Args:
        style: ``"fila"`` (FiLA-Video Sec. 3.3 / VideoChat): "This video samples N frames of a T-second video at
            t1, t2, ... seconds."; ``"llava_ov"``: LLaVA-OneVision's training-time wording.
    """
    times = [float(t) for t in timestamps]
    if style == "fila":
        return (
            f"This video samples {len(times)} frames of a {duration_s:.1f}-second video at "
            f"{', '.join(f'{t:.1f}' for t in times)} seconds."
        )
    if style == "llava_ov":
        located = ",".join(f"{t:.2f}s" for t in times)
        return (
            f"The video lasts for {duration_s:.2f} seconds, and {len(times)} frames are uniformly sampled from it. "
            f"These frames are located at {located}.Please answer the following questions related to this video."
        )
    raise ValueError(f"unknown time-instruction style {style!r}; use 'fila' or 'llava_ov'")
