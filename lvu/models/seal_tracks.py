"""Tracklets for SEAL's action tokens: detections linked over frames by box overlap and appearance, in torch.

The supplement runs a detector (YOLOv10-X) and BoT-SORT, keeps tracklets of at least ``L_min`` frames, splits those
longer than ``L_max``, and encodes the spatial union of each piece's boxes (L_min/L_max 8/16 on MovieChat, 16/32 on
Ego4D-NLQ). BoT-SORT lives in ultralytics (AGPL, needs torchvision); this is a small tracker in its spirit: the cost
of linking a detection to a track mixes ``1 - IoU`` with the track's last box and ``1 - cosine`` with its appearance
(an exponential moving average of its detections' features), and a track survives ``max_lost`` frames without a
detection. No Kalman motion model and no camera-motion compensation: at the sampling rates SEAL uses (a few frames per
second) the last box is the prediction. Matching is greedy on the lowest cost first, not Hungarian (no scipy in the
dependencies; with a cost threshold the two rarely differ).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lvu.models.seal_masks import box_iou


@dataclass
class TrackerConfig:
    """Linking detections into tracklets (values: the supplement's, or OPEN with the reason)."""

    iou_weight: float = 0.5
    """OPEN: the cost is iou_weight * (1 - IoU) + (1 - iou_weight) * (1 - appearance cosine) (BoT-SORT fuses both)."""
    max_cost: float = 0.6
    """OPEN: a detection and a track further apart than this are not linked."""
    max_lost: int = 4
    """OPEN: frames a track may go undetected before it ends."""
    feature_momentum: float = 0.9
    """A track's appearance: this much of the old, the rest of the new detection's feature (BoT-SORT's EMA)."""
    min_length: int = 8
    """L_min: tracklets with fewer detections are dropped (MovieChat 8, Ego4D-NLQ 16)."""
    max_length: int = 16
    """L_max: longer tracklets are split into pieces of at most this many detections (MovieChat 16, Ego4D-NLQ 32)."""


@dataclass
class Track:
    """One object's detections over time."""

    frames: list[int] = field(default_factory=list)
    boxes: list[torch.Tensor] = field(default_factory=list)  # each [4] (x0, y0, x1, y1)
    feature: torch.Tensor | None = None  # [D] appearance (moving average)


@dataclass
class Tracklet:
    """A piece of a track, as an action token sees it: its frames and the union of its boxes."""

    frames: list[int]
    box: torch.Tensor  # [4] the spatial union of its boxes


class Tracker:
    """Feed :meth:`update` one frame's detections at a time, then :meth:`tracklets`."""

    def __init__(self, cfg: TrackerConfig) -> None:
        self.cfg = cfg
        self.active: list[Track] = []
        self.ended: list[Track] = []

    def _costs(self, boxes: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``[tracks, detections]`` linking costs."""
        last = torch.stack([t.boxes[-1] for t in self.active])
        looks = torch.stack([t.feature for t in self.active if t.feature is not None])
        overlap = box_iou(last, boxes)
        similar = F.normalize(looks.float(), dim=-1) @ F.normalize(features.float(), dim=-1).T
        w = self.cfg.iou_weight
        return w * (1 - overlap) + (1 - w) * (1 - similar)

    def update(self, frame: int, boxes: torch.Tensor, features: torch.Tensor) -> None:
        """Link frame ``frame``'s detections (``boxes [N, 4]``, ``features [N, D]``; N may be 0) to the active tracks;
        unlinked detections start tracks. A track unseen for more than ``max_lost`` frames (frame numbers, so frames
        without an update count too) ends first."""
        gone = [t for t in self.active if frame - t.frames[-1] - 1 > self.cfg.max_lost]
        self.ended += gone
        self.active = [t for t in self.active if t not in gone]
        linked: set[int] = set()
        if self.active and len(boxes):
            costs = self._costs(boxes, features)
            used_tracks: set[int] = set()
            order = torch.argsort(costs.flatten(), stable=True)
            for flat in order.tolist():
                t, d = divmod(flat, costs.shape[1])
                if float(costs[t, d]) > self.cfg.max_cost:
                    break  # sorted: every later pair costs more
                if t in used_tracks or d in linked:
                    continue
                used_tracks.add(t)
                linked.add(d)
                self._extend(self.active[t], frame, boxes[d], features[d])
        for d in range(len(boxes)):
            if d not in linked:
                track = Track()
                self._extend(track, frame, boxes[d], features[d])
                self.active.append(track)

    def _extend(self, track: Track, frame: int, box: torch.Tensor, feature: torch.Tensor) -> None:
        track.frames.append(frame)
        track.boxes.append(box)
        m = self.cfg.feature_momentum
        track.feature = feature.float() if track.feature is None else m * track.feature + (1 - m) * feature.float()

    def tracklets(self) -> list[Tracklet]:
        """Every track (ended or still active), cut to SEAL's rule: fewer than ``min_length`` detections dropped,
        longer ones split into consecutive pieces of at most ``max_length`` (the last piece may be shorter), each with
        the union of its boxes. In order of their first frame."""
        pieces = []
        for track in sorted(self.ended + self.active, key=lambda t: t.frames[0]):
            if len(track.frames) < self.cfg.min_length:
                continue
            for start in range(0, len(track.frames), self.cfg.max_length):
                boxes = torch.stack(track.boxes[start:start + self.cfg.max_length])
                union = torch.cat([boxes[:, :2].min(0).values, boxes[:, 2:].max(0).values])
                pieces.append(Tracklet(track.frames[start:start + self.cfg.max_length], union))
        return pieces
