"""The tracker behind SEAL's action tokens (lvu/models/seal_tracks.py): detections linked by overlap and appearance,
gaps bridged, short tracklets dropped, long ones split, each piece's union box."""

from __future__ import annotations

import torch

from lvu.models.seal_tracks import Tracker, TrackerConfig


def _box(x: float, y: float, size: float = 10.0) -> torch.Tensor:
    return torch.tensor([x, y, x + size, y + size])


def test_two_objects_crossing_a_spurious_detection_and_a_gap():
    cfg = TrackerConfig(min_length=8, max_length=16, max_lost=4)
    red, blue, noise = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0]), torch.tensor([0, 0, 1.0, 0])
    tracker = Tracker(cfg)
    for frame in range(12):
        boxes, features = [_box(2 * frame, 0)], [red]  # moves right, 2 px a frame
        if frame not in (5, 6):  # blue is missed twice: the track bridges the gap
            boxes.append(_box(40 - 2 * frame, 30))
            features.append(blue)
        if frame in (3, 4, 5):  # a spurious detection for three frames: too short to keep
            boxes.append(_box(80, 80))
            features.append(noise)
        tracker.update(frame, torch.stack(boxes), torch.stack(features))
    pieces = tracker.tracklets()
    assert [p.frames for p in pieces] == [list(range(12)), [f for f in range(12) if f not in (5, 6)]]
    assert pieces[0].box.tolist() == [0.0, 0.0, 32.0, 10.0]  # the union of the red boxes
    assert pieces[1].box.tolist() == [18.0, 30.0, 50.0, 40.0]


def test_an_object_lost_too_long_starts_a_new_track_and_long_tracks_are_split():
    cfg = TrackerConfig(min_length=2, max_length=4, max_lost=1)
    look = torch.tensor([[1.0, 0.0]])
    tracker = Tracker(cfg)
    for frame in range(12):  # unseen for frames 6-8 (empty detections): more than max_lost
        seen = frame not in (6, 7, 8)
        tracker.update(frame, _box(0, 0)[None] if seen else torch.zeros(0, 4), look if seen else torch.zeros(0, 2))
    pieces = tracker.tracklets()
    assert [p.frames for p in pieces] == [[0, 1, 2, 3], [4, 5], [9, 10, 11]]


def test_appearance_keeps_identities_apart_when_boxes_overlap():
    cfg = TrackerConfig(min_length=1, max_length=50, iou_weight=0.3)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    tracker = Tracker(cfg)
    for frame in range(6):
        # Same place, listed in alternating order: only appearance tells them apart.
        order = [(a, 0), (b, 1)] if frame % 2 == 0 else [(b, 1), (a, 0)]
        tracker.update(frame, torch.stack([_box(0, 0) for _ in order]), torch.stack([f for f, _ in order]))
    tracks = sorted(tracker.active, key=lambda t: t.frames[0])
    assert len(tracks) == 2 and all(t.frames == list(range(6)) for t in tracks)
    assert {tuple(t.feature.round().tolist()) for t in tracks} == {(1.0, 0.0), (0.0, 1.0)}
