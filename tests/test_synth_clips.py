"""``SynthConfig.clip_seconds``: a new arrangement of the act's objects in every clip (LV-MAE toy, design v2)."""

from __future__ import annotations

import itertools

import numpy as np

from lvu.data.synth import LABEL_MAPS, SynthConfig, _plan, annotate, make_video, render


def _truth(cfg: SynthConfig, seed: int, index: int) -> dict:
    return _plan(np.random.default_rng([seed, index]), cfg)


def test_default_is_unchanged_and_clip_mode_keeps_acts_and_events():
    assert SynthConfig().clip_seconds is None
    base = SynthConfig(min_seconds=40, max_seconds=60, fps=4, width=64, height=48)
    clips = SynthConfig(min_seconds=40, max_seconds=60, fps=4, width=64, height=48, clip_seconds=5)
    for index in range(4):
        a, b = _truth(base, 0, index), _truth(clips, 0, index)
        assert a["acts"] == b["acts"] and a["events"] == b["events"] and a["frames"] == b["frames"]
        assert a["scenes"] != b["scenes"]


def test_every_clip_of_an_act_is_a_new_arrangement_of_the_acts_objects():
    cfg = SynthConfig(min_seconds=40, max_seconds=60, fps=4, width=64, height=48, clip_seconds=5)
    step = 20  # 5 s at 4 fps
    for index in range(4):
        truth = _truth(cfg, 1, index)
        scenes = truth["scenes"]
        # Scenes tile the video; each lies inside one clip of the grid from 0 s and inside one act.
        assert scenes[0]["start_frame"] == 0 and scenes[-1]["end_frame"] == truth["frames"]
        assert all(s["end_frame"] == t["start_frame"] for s, t in itertools.pairwise(scenes))
        for scene in scenes:
            assert scene["start_frame"] // step == (scene["end_frame"] - 1) // step
            act = next(a for a in truth["acts"] if a["start_frame"] <= scene["start_frame"] < a["end_frame"])
            assert scene["end_frame"] <= act["end_frame"] and scene["scene_type"] == act["scene_type"]
            assert 1 <= len(scene["objects"]) <= 3
        for act in truth["acts"]:
            inside = [s for s in scenes if act["start_frame"] <= s["start_frame"] < act["end_frame"]]
            # Cut at every clip boundary inside the act, and nowhere else.
            starts = [s["start_frame"] for s in inside]
            assert starts == [act["start_frame"], *range((act["start_frame"] // step + 1) * step, act["end_frame"],
                                                          step)]
            # The act's objects: at most three shape/colour pairs, re-placed in every clip.
            pairs = {(o["shape"], o["colour"]) for s in inside for o in s["objects"]}
            assert len(pairs) <= 3
            placements = [tuple((o["x"], o["y"], o["size"]) for o in s["objects"]) for s in inside]
            assert len(set(placements)) == len(placements)


def test_clip_mode_renders_and_labels_from_what_is_drawn():
    cfg = SynthConfig(min_seconds=12, max_seconds=14, fps=4, width=64, height=48, clip_seconds=5)
    truth = _truth(cfg, 2, 0)
    frames = list(render(truth, cfg))
    assert len(frames) == truth["frames"]
    # Frames 19 and 20 straddle a clip boundary inside the first act: they differ by more than the objects' motion
    # between two frames within a clip.
    assert truth["acts"][0]["end_frame"] > 21
    within = np.abs(frames[18].astype(int) - frames[19].astype(int)).sum()
    across = np.abs(frames[19].astype(int) - frames[20].astype(int)).sum()
    assert across > within
    annotation = annotate(truth, cfg, np.random.default_rng(0))
    assert set(annotation["labels"]) == set(LABEL_MAPS)
    key, sample = make_video(0, seed=2, cfg=cfg)
    assert key == "synth_2_000000" and sample["mp4"][4:8] == b"ftyp"
    assert sample["json"]["synth"]["scenes"] == truth["scenes"]
