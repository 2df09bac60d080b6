"""PyAV decoding: exact frames, partial decoding, composites, encoding, and broken inputs."""

from __future__ import annotations

import numpy as np
import pytest
from support.media import zero_frame_mp4

from lvu.data.synth import SynthConfig, make_video, read_timecode
from lvu.data.video import CompositeVideo, VideoError, VideoFile, encode_mp4


@pytest.fixture(scope="module")
def long_video() -> bytes:
    # 60 s at 8 fps: 480 frames, keyframes every 2 s.
    _, fields = make_video(0, seed=11, cfg=SynthConfig(min_seconds=60, max_seconds=60, fps=8, width=64, height=48))
    return fields["mp4"]


def test_info_has_exact_frame_times(long_video):
    info = VideoFile(long_video).info
    assert info.num_frames == 480 and info.fps == 8.0
    np.testing.assert_allclose(info.frame_times, np.arange(480) / 8.0)
    assert info.duration_s == pytest.approx(60.0)
    assert info.keyframe[0] and 20 <= info.keyframe.sum() <= 60


def test_read_returns_the_requested_frames_in_the_requested_order(long_video):
    video = VideoFile(long_video)
    indices = [300, 5, 5, 479, 0, 161, 162]
    frames = video.read(indices)
    assert frames.shape == (7, 48, 64, 3) and frames.dtype == np.uint8
    assert [read_timecode(f) for f in frames] == indices


def test_read_decodes_only_what_it_needs(long_video):
    video = VideoFile(long_video)
    video.read([10, 200, 400])
    # Three targets, each at most one GOP (16 frames + scene-cut keyframes) past its keyframe.
    assert 0 < video.frames_decoded <= 3 * 17
    video.frames_decoded = 0
    video.read(list(range(100, 110)))  # consecutive frames: one seek, decoded straight through
    assert video.frames_decoded <= 10 + 16


def test_resize_while_decoding(long_video):
    frames = VideoFile(long_video).read([0, 1], size=(32, 24))
    assert frames.shape == (2, 24, 32, 3)


def test_composite_joins_parts_on_one_timeline():
    _, a = make_video(0, seed=1, cfg=SynthConfig(min_seconds=3, max_seconds=3, fps=8, width=64, height=48))
    _, b = make_video(1, seed=1, cfg=SynthConfig(min_seconds=2, max_seconds=2, fps=8, width=64, height=48))
    video = CompositeVideo([VideoFile(a["mp4"]), VideoFile(b["mp4"])])
    assert video.info.num_frames == 40 and video.info.duration_s == pytest.approx(5.0)
    np.testing.assert_allclose(video.info.frame_times[22:26], [2.75, 2.875, 3.0, 3.125])
    np.testing.assert_allclose(video.part_offsets_s, [0.0, 3.0])
    # Frame 24 is the first frame of the second part (its own timecode restarts at 0).
    assert [read_timecode(f) for f in video.read([23, 24, 39])] == [23, 0, 15]


def test_encoding_is_reproducible_while_a_progress_display_runs():
    # With x264's macroblock tree on, this case gave different bytes in about one run of three.
    from rich.progress import Progress

    from lvu.data.synth import _plan, render

    cfg = SynthConfig(min_seconds=12, max_seconds=20, fps=8, width=64, height=48)
    videos = [[f.copy() for f in render(_plan(np.random.default_rng([4, i]), cfg), cfg)] for i in range(5)]
    encodings = [set() for _ in videos]
    with Progress(transient=True) as progress:
        task = progress.add_task("encoding", total=30)
        for round_ in range(30):
            encodings[round_ % 5].add(encode_mp4(videos[round_ % 5], cfg.fps))
            progress.advance(task)
    assert [len(e) for e in encodings] == [1] * 5


def test_encoding_is_reproducible_and_rejects_odd_sizes():
    frames = [np.full((16, 32, 3), i * 10, np.uint8) for i in range(12)]
    assert encode_mp4(frames, 8) == encode_mp4(frames, 8)
    with pytest.raises(ValueError, match="must be even"):
        encode_mp4([np.zeros((15, 32, 3), np.uint8)], 8)


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty_video"), (b"\x00\x01garbage" * 50, "undecodable_video"), (None, "no_frames")],
    ids=["zero-length", "corrupt", "zero-frames"],
)
def test_broken_videos_raise_with_a_reason(data, reason):
    with pytest.raises(VideoError) as info:
        _ = VideoFile(zero_frame_mp4() if data is None else data).info
    assert info.value.reason == reason


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_truncated_video_is_undecodable(long_video, fraction):
    # Our mp4s keep their index (moov) at the end, so any cut leaves a file that cannot be demuxed.
    with pytest.raises(VideoError) as info:
        _ = VideoFile(long_video[: int(len(long_video) * fraction)]).info
    assert info.value.reason == "undecodable_video"
