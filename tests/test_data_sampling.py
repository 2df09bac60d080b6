"""Samplers: which frames, with timestamps checked against the synthetic ground truth (the drawn timecode)."""

from __future__ import annotations

import numpy as np
import pytest

from lvu.data.sampling import SamplerConfig, SamplerName, sample_frames, segment_bounds, time_instruction
from lvu.data.synth import SynthConfig, make_video, read_timecode
from lvu.data.video import VideoError, VideoFile, VideoInfo


def fake_info(frames: int, fps: float = 10.0) -> VideoInfo:
    return VideoInfo(frame_times=np.arange(frames) / fps, keyframe=np.ones(frames, bool), width=8, height=8,
                     duration_s=frames / fps, fps=fps)


@pytest.fixture(scope="module")
def video() -> VideoFile:
    _, fields = make_video(3, seed=5, cfg=SynthConfig(min_seconds=30, max_seconds=30, fps=8, width=64, height=48))
    return VideoFile(fields["mp4"])


@pytest.mark.parametrize("name", ["uniform", "fps", "random_interval", "multi_rate", "segments"])
def test_timestamps_match_the_decoded_frames(video, name):
    cfg = SamplerConfig(name=SamplerName(name), num_frames=12, fps=2.0, min_frames=10, max_frames=20,
                        segment_seconds=5.0, frames_per_segment=3)
    picked = sample_frames(cfg, video.info, np.random.default_rng(0))
    frames = video.read(picked.indices)
    drawn = np.array([read_timecode(f) for f in frames])
    np.testing.assert_array_equal(drawn, picked.indices)  # the frames decoded are the frames chosen
    np.testing.assert_allclose(picked.timestamps, drawn / 8.0)  # ... and their timestamps are their true times


def test_uniform_spreads_over_the_whole_video():
    picked = sample_frames(SamplerConfig(num_frames=5), fake_info(101))
    assert picked.indices.tolist() == [0, 25, 50, 75, 100]
    with pytest.raises(VideoError, match="has 4 frames") as info:
        sample_frames(SamplerConfig(num_frames=5), fake_info(4))
    assert info.value.reason == "too_short"
    repeated = sample_frames(SamplerConfig(num_frames=5, allow_repeats=True), fake_info(4))
    assert repeated.indices.tolist() == [0, 1, 2, 2, 3]


def test_fps_sampler_with_upper_bound():
    assert sample_frames(SamplerConfig(name=SamplerName.fps, fps=2.0, num_frames=100), fake_info(50)).indices.tolist() \
        == list(range(0, 50, 5))
    capped = sample_frames(SamplerConfig(name=SamplerName.fps, fps=2.0, num_frames=4), fake_info(50))
    assert capped.indices.tolist() == [0, 16, 33, 49]


def test_random_interval_one_frame_per_interval_reproducibly():
    cfg = SamplerConfig(name=SamplerName.random_interval, min_frames=40, max_frames=120)
    info = fake_info(1000)
    a = sample_frames(cfg, info, np.random.default_rng(7))
    b = sample_frames(cfg, info, np.random.default_rng(7))
    c = sample_frames(cfg, info, np.random.default_rng(8))
    assert np.array_equal(a.indices, b.indices) and not np.array_equal(a.indices, c.indices)
    assert 40 <= len(a) <= 120
    edges = np.linspace(0, 1000, len(a) + 1)
    assert np.all(a.indices >= np.floor(edges[:-1])) and np.all(a.indices < np.maximum(np.floor(edges[1:]), 1))
    assert np.all(np.diff(a.indices) > 0)
    with pytest.raises(VideoError, match="needs 40"):
        sample_frames(cfg, fake_info(30), np.random.default_rng(0))


def test_multi_rate_groups_consecutive_threes():
    picked = sample_frames(SamplerConfig(name=SamplerName.multi_rate, num_frames=96, group_size=3), fake_info(960))
    assert len(picked) == 96 and picked.groups.tolist() == [i // 3 for i in range(96)]
    with pytest.raises(ValueError, match="not a multiple"):
        sample_frames(SamplerConfig(name=SamplerName.multi_rate, num_frames=95), fake_info(960))


def test_segments_are_consecutive_non_overlapping_clips():
    info = fake_info(233, fps=10.0)  # 23.3 s: four 5-second clips, and a 3.3 s tail (kept: >= 2.5 s)
    cfg = SamplerConfig(name=SamplerName.segments, segment_seconds=5.0, frames_per_segment=4)
    picked = sample_frames(cfg, info)
    np.testing.assert_allclose(picked.segments, [[0, 5], [5, 10], [10, 15], [15, 20], [20, 23.3]])
    assert picked.groups.tolist() == [g for g in range(5) for _ in range(4)]
    for clip, (start, end) in enumerate(picked.segments):
        times = picked.timestamps[picked.groups == clip]
        assert np.all((times >= start) & (times < end)) and times[0] == start
    np.testing.assert_allclose(segment_bounds(22.0, 5.0, 0.5), [[0, 5], [5, 10], [10, 15], [15, 20]])  # 2 s tail
    with pytest.raises(VideoError, match="has no 5-second clip") as info_err:
        sample_frames(cfg, fake_info(20))
    assert info_err.value.reason == "too_short"


def test_time_instruction_wordings():
    assert time_instruction([0.0, 1.5, 3.0], 4.0) == (
        "This video samples 3 frames of a 4.0-second video at 0.0, 1.5, 3.0 seconds.")
    assert time_instruction([0, 2], 3.25, style="llava_ov") == (
        "The video lasts for 3.25 seconds, and 2 frames are uniformly sampled from it. These frames are located at "
        "0.00s,2.00s.Please answer the following questions related to this video.")
    with pytest.raises(ValueError, match="unknown time-instruction style"):
        time_instruction([0], 1, style="other")


def test_a_window_takes_its_frames_from_that_stretch_only():
    from lvu.data.sampling import sample_window

    info = fake_info(100, fps=10.0)  # 10 s
    picked = sample_window(4, info, 2.0, 5.0)
    assert picked.timestamps.tolist() == pytest.approx([2.0, 3.0, 4.0, 5.0])
    assert sample_window(3, info, 4.05, 4.15).timestamps.tolist() == pytest.approx([4.1, 4.1, 4.1])  # repeats
    assert sample_window(2, info, 30.0, 40.0) is None  # outside the video: the decoder samples the whole video
