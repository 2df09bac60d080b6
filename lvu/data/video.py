"""Video decoding with PyAV that decodes only the frames it is asked for, and mp4 encoding for synthetic data.

A :class:`VideoFile` first demuxes the packet table (no decoding) to learn every frame's presentation time and
which frames are keyframes. Reading frames ``[i, j, ...]`` then seeks to the keyframe before each needed stretch and
decodes forward only as far as the last requested frame of that stretch; frames in between are decoded (the codec
needs them) but never converted to RGB or kept. Memory therefore holds the compressed bytes plus the requested frames,
whatever the video's length. Frame indices are in display order; timestamps are seconds from the stream's start.

A :class:`CompositeVideo` joins several files end to end on one timeline (long videos built from parts, see
``lvu data concat``), with the same interface.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VideoSource = bytes | str | os.PathLike


class VideoError(Exception):
    """A video that cannot be used. ``reason`` is a short machine-readable tag for skip counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """What the container says, with exact per-frame times from the packet table."""

    frame_times: np.ndarray  # float64 seconds, display order, starting at 0 for the first frame
    keyframe: np.ndarray  # bool per frame (display order)
    width: int
    height: int
    duration_s: float  # end of the last frame
    fps: float

    @property
    def num_frames(self) -> int:
        return len(self.frame_times)


def _open(source: VideoSource):
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise VideoError("empty_video", "zero-length video")
        return av.open(io.BytesIO(source), mode="r")
    path = Path(source)
    if not path.is_file():
        raise VideoError("missing_video", f"no such file: {path}")
    if path.stat().st_size == 0:
        raise VideoError("empty_video", f"zero-length video: {path}")
    return av.open(str(path), mode="r")


class VideoFile:
    """One video (mp4 bytes or a path), decoded on demand.

    Args:
        source: encoded bytes or a file path.
        threads: decoder threads (keep 1 inside data-loader workers: the workers are the parallelism).
    """

    def __init__(self, source: VideoSource, threads: int = 1) -> None:
        self.source = source
        self.threads = threads
        self._info: VideoInfo | None = None
        self._pts: np.ndarray | None = None  # int pts per frame, display order
        self.frames_decoded = 0  # frames the codec produced so far (to check that reads stay partial)

    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            self._info = self._probe()
        return self._info

    def _probe(self) -> VideoInfo:
        try:
            with _open(self.source) as container:
                if not container.streams.video:
                    if not len(container.streams):  # a valid container that was closed before any frame
                        raise VideoError("no_frames", "video has no frames (empty container)")
                    raise VideoError("no_video_stream", "container has no video stream")
                stream = container.streams.video[0]
                pts, keys = [], []
                for packet in container.demux(stream):
                    if packet.pts is None or packet.size == 0:
                        continue
                    pts.append(packet.pts)
                    keys.append(packet.is_keyframe)
                width, height = stream.codec_context.width, stream.codec_context.height
                time_base = stream.time_base or Fraction(1, 1)
                rate = stream.average_rate or stream.guessed_rate
        except VideoError:
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoError("undecodable_video", f"cannot demux video: {exc}") from None
        if not pts:
            raise VideoError("no_frames", "video has no frames")
        order = np.argsort(pts, kind="stable")
        pts_sorted = np.asarray(pts, dtype=np.int64)[order]
        seconds = (pts_sorted - pts_sorted[0]).astype(np.float64) * float(time_base)
        fps = float(rate) if rate else (len(seconds) / max(seconds[-1], 1e-9) if len(seconds) > 1 else 1.0)
        last = seconds[-1] + (1.0 / fps if fps > 0 else 0.0)
        self._pts = pts_sorted
        return VideoInfo(
            frame_times=seconds,
            keyframe=np.asarray(keys, dtype=bool)[order],
            width=int(width),
            height=int(height),
            duration_s=float(last),
            fps=fps,
        )

    def read(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames at display-order ``indices`` (any order, repeats allowed) as uint8 ``[N, H, W, 3]`` RGB.

        Args:
            size: ``(width, height)`` to resize to while converting (cheaper than resizing afterwards).
        """
        info = self.info
        assert self._pts is not None
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            w, h = size or (info.width, info.height)
            return np.zeros((0, h, w, 3), dtype=np.uint8)
        if idx.min() < 0 or idx.max() >= info.num_frames:
            raise IndexError(f"frame index out of range [0, {info.num_frames})")
        wanted = np.unique(idx)
        decoded = self._decode(wanted, size)
        if len(decoded) != len(wanted):
            missing = sorted(set(wanted.tolist()) - set(decoded))
            raise VideoError("undecodable_video", f"could not decode frames {missing[:5]}")
        return np.stack([decoded[int(i)] for i in idx])

    def _decode(self, wanted: np.ndarray, size: tuple[int, int] | None) -> dict[int, np.ndarray]:
        info = self.info
        assert self._pts is not None
        key_positions = np.flatnonzero(info.keyframe)
        # For each wanted frame, the last keyframe at or before it: decoding must start there.
        starts = key_positions[np.searchsorted(key_positions, wanted, side="right") - 1] if len(key_positions) else (
            np.zeros_like(wanted))
        pts_to_index = {int(p): i for i, p in enumerate(self._pts)}
        wanted_set = set(wanted.tolist())
        out: dict[int, np.ndarray] = {}
        width, height = size if size is not None else (None, None)
        try:
            with _open(self.source) as container:
                stream = container.streams.video[0]
                if self.threads > 1:
                    stream.thread_type = "AUTO"
                stream.codec_context.thread_count = self.threads
                position = -1  # index of the last frame decoded
                frames = None
                for n, target in enumerate(wanted):
                    start = int(starts[n])
                    if frames is None or start > position:
                        # The target lies beyond the next keyframe: seeking is cheaper than decoding through.
                        container.seek(int(self._pts[start]), stream=stream, backward=True, any_frame=False)
                        frames = container.decode(stream)
                        position = start - 1
                    while position < target:
                        frame = next(frames, None)
                        if frame is None:
                            return out
                        self.frames_decoded += 1
                        index = pts_to_index.get(frame.pts)
                        if index is None:
                            continue
                        position = index
                        if index in wanted_set and index not in out:
                            out[index] = frame.to_ndarray(format="rgb24", width=width, height=height)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoError("undecodable_video", f"decoding failed: {exc}") from None
        return out


    def iter_frames(self, size: tuple[int, int] | None = None) -> Iterator[tuple[np.ndarray, float]]:
        """Every frame in display order with its time (s from the first frame), decoded one at a time (memory holds
        one frame, whatever the video's length)."""
        info = self.info
        assert self._pts is not None
        pts_to_index = {int(p): i for i, p in enumerate(self._pts)}
        width, height = size if size is not None else (None, None)
        try:
            with _open(self.source) as container:
                stream = container.streams.video[0]
                stream.codec_context.thread_count = self.threads
                for frame in container.decode(stream):
                    index = pts_to_index.get(frame.pts)
                    if index is None:
                        continue
                    self.frames_decoded += 1
                    yield frame.to_ndarray(format="rgb24", width=width, height=height), float(info.frame_times[index])
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoError("undecodable_video", f"decoding failed: {exc}") from None


class CompositeVideo:
    """Several videos played back to back as one timeline (a long video stored as its parts)."""

    def __init__(self, parts: Sequence[VideoFile]) -> None:
        if not parts:
            raise VideoError("no_frames", "composite video has no parts")
        self.parts = list(parts)
        self._info: VideoInfo | None = None
        self._bounds: np.ndarray | None = None
        self._offsets: np.ndarray | None = None

    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            infos = [p.info for p in self.parts]
            offsets = self._offsets = np.cumsum([0.0] + [i.duration_s for i in infos[:-1]])
            self._bounds = np.cumsum([0] + [i.num_frames for i in infos])
            first = infos[0]
            self._info = VideoInfo(
                frame_times=np.concatenate([i.frame_times + o for i, o in zip(infos, offsets, strict=True)]),
                keyframe=np.concatenate([i.keyframe for i in infos]),
                width=first.width,
                height=first.height,
                duration_s=float(offsets[-1] + infos[-1].duration_s),
                fps=first.fps,
            )
        return self._info

    @property
    def part_offsets_s(self) -> np.ndarray:
        """Start time of each part on the joint timeline."""
        _ = self.info
        assert self._offsets is not None
        return self._offsets

    def read(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        info = self.info
        assert self._bounds is not None
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= info.num_frames):
            raise IndexError(f"frame index out of range [0, {info.num_frames})")
        # Parts may differ in resolution; without an explicit size, convert all to the first part's.
        size = size or (info.width, info.height)
        out = np.zeros((len(idx), size[1], size[0], 3), dtype=np.uint8)
        part_of = np.searchsorted(self._bounds, idx, side="right") - 1
        for part in np.unique(part_of):
            mask = part_of == part
            out[mask] = self.parts[part].read(idx[mask] - self._bounds[part], size=size)
        return out


def _h264_stream(container, frame: np.ndarray, rate: Fraction, crf: int, gop: int):
    """An H.264 stream for frames like ``frame``: single-threaded and bit-exact (see :func:`encode_mp4`)."""
    height, width = frame.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
    stream = container.add_stream("libx264", rate=rate, options={
        "crf": str(crf), "preset": "veryfast", "g": str(max(1, gop)), "threads": "1",
        "x264-params": "mbtree=0:rc-lookahead=0"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.flags |= av.codec.context.Flags.bitexact
    return stream


def _encode(frames: Iterable[tuple[np.ndarray, int | None]], rate: Fraction, crf: int, gop: int,
            time_base: Fraction | None) -> bytes:
    """Mux ``(frame, pts)`` pairs (pts None: the encoder counts frames at ``rate``) as mp4 bytes."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = None
        for frame, pts in frames:
            if stream is None:
                stream = _h264_stream(container, frame, rate, crf, gop)
                if time_base is not None:
                    stream.codec_context.time_base = stream.time_base = time_base
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if pts is not None:
                picture.pts, picture.time_base = pts, time_base
            for packet in stream.encode(picture):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frames to encode")
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def encode_timed_mp4(frames: Iterable[tuple[np.ndarray, float]], *, crf: int = 23, gop_seconds: float = 2.0,
                     nominal_fps: float = 30.0) -> bytes:
    """Encode ``(RGB uint8 [H, W, 3], time in s)`` pairs as H.264 mp4 bytes whose frames keep those times (variable
    frame rate: millisecond timestamps), e.g. clips of different frame rates joined into one video. Times must
    increase; width and height must be even. Single-threaded and bit-exact, as :func:`encode_mp4`."""

    def stamped() -> Iterator[tuple[np.ndarray, int]]:
        last = -1
        for frame, seconds in frames:
            last = max(round(seconds * 1000), last + 1)  # strictly increasing, whatever the rounding
            yield frame, last

    rate = Fraction(nominal_fps).limit_denominator(1001)
    return _encode(stamped(), rate, crf, round(nominal_fps * gop_seconds), Fraction(1, 1000))


def encode_mp4(frames, fps: float, *, crf: int = 18, gop_seconds: float = 2.0) -> bytes:
    """Encode RGB uint8 frames (an iterable of ``[H, W, 3]``) as H.264 mp4 bytes, reproducibly.

    Same frames, same bytes: bit-exact muxing and a single encoder thread (parallelism belongs to the caller).
    Width and height must be even (yuv420p).

    x264's macroblock-tree rate control and its lookahead are off: with them on (libx264 core 165 through PyAV 18),
    the same frames were seen to encode to slightly different bytes in about one run out of three whenever Rich's
    progress display ran in the same process (even in processes forked from it), although x264 ran single-threaded
    and valgrind found no uninitialised reads. With both off, output was identical in every trial; the cost is a
    little compression efficiency, which synthetic data does not need.
    """
    rate = Fraction(fps).limit_denominator(1001)
    return _encode(((frame, None) for frame in frames), rate, crf, round(fps * gop_seconds), None)
