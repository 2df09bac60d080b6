"""Shot-boundary detection on synthetic videos whose cuts are known (lvu/data/shots.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SMALL_VIDEOS

from lvu.data.decoders import VideoDecoder
from lvu.data.sampling import SamplerConfig
from lvu.data.shots import ShotConfig, colour_histograms, detect_shots, find_cuts, shot_ids
from lvu.data.synth import make_video
from lvu.data.video import VideoFile

CFG = ShotConfig(enabled=True, fps=SMALL_VIDEOS.fps)  # every frame: cuts are exact


@pytest.mark.parametrize("index", range(4))
def test_place_changes_are_found_and_flashes_are_not_cuts(index):
    key, sample = make_video(index, seed=11, cfg=SMALL_VIDEOS)
    truth = sample["json"]["synth"]
    fps = SMALL_VIDEOS.fps
    starts = detect_shots(VideoFile(sample["mp4"]), CFG)
    found = np.round(starts * fps).astype(int)
    acts = [a["start_frame"] for a in truth["acts"][1:]]  # the background changes: must be found
    cuts = {s["start_frame"] for s in truth["scenes"][1:]}  # hard cuts inside a place: may be found
    assert all(np.abs(found - a).min() <= 1 for a in acts), (key, found, acts)
    assert all(min(abs(f - c) for c in cuts) <= 1 for f in found), (key, found, sorted(cuts))
    # The default detection rate (4 thumbnails per second) finds the same places to within a thumbnail.
    coarse = detect_shots(VideoFile(sample["mp4"]), ShotConfig(enabled=True))
    assert all(np.abs(coarse - a / fps).min() <= 0.25 for a in acts), (key, coarse, acts)
    flashes = [e for e in truth["events"] if e["kind"] == "flash"]
    for flash in flashes:  # a flash is a big histogram change that goes away: never a cut by itself
        inside = [f for f in found if flash["start_frame"] <= f <= flash["end_frame"]]
        assert all(min(abs(f - c) for c in cuts) <= 1 for f in inside)


def test_a_flash_needs_to_persist_to_count():
    dark = np.zeros((10, 8, 8, 3), dtype=np.uint8)
    flashed = dark.copy()
    flashed[4] = 255  # one white frame
    assert find_cuts(colour_histograms(flashed), ShotConfig(fps=1, min_shot_seconds=1)).tolist() == []
    cut = dark.copy()
    cut[4:] = 255  # stays white: a cut at 4
    assert find_cuts(colour_histograms(cut), ShotConfig(fps=1, min_shot_seconds=1)).tolist() == [4]


def test_decoder_reports_each_sampled_frames_shot():
    _, sample = make_video(0, seed=11, cfg=SMALL_VIDEOS)
    sample = {"mp4": sample["mp4"], "json": json.dumps(sample["json"]).encode()}  # as read from a shard
    decoded = VideoDecoder(SamplerConfig(num_frames=12), shots=CFG)(sample, np.random.default_rng(0))
    starts = decoded["shot_starts_s"]
    assert len(starts) >= 2 and decoded["shots"].tolist() == shot_ids(decoded["timestamps"], starts).tolist()
    assert decoded["shots"][0] == 0 and decoded["shots"][-1] == len(starts)
    assert np.all(np.diff(decoded["shots"]) >= 0)
    off = VideoDecoder(SamplerConfig(num_frames=12))(sample, np.random.default_rng(0))
    assert "shots" not in off
