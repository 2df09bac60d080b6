"""Content-based shot boundaries: the optional shot-segmentation step before LinVT (the paper uses AutoShot).

AutoShot is a trained network with no maintained package; this is the classic colour-histogram detector (as in
PySceneDetect's content detector) with one addition: a cut must *persist*. A frame-to-frame change counts only if
none of the frames shortly after it looks like any of the frames shortly before it, so flashes, bursts of light and
brief overlays (to white and back) are not cuts, neither where they start nor where they end.

Detection runs on small thumbnails decoded at a low rate, so it costs a fraction of decoding the sampled frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvu.data.video import VideoFile


@dataclass
class ShotConfig:
    """Recipe section ``data.shots`` (off by default)."""

    enabled: bool = False
    """Detect shot boundaries while decoding."""
    fps: float = 4.0
    """Thumbnails per second for detection."""
    width: int = 64
    """Thumbnail width for detection."""
    height: int = 36
    """Thumbnail height for detection."""
    threshold: float = 0.3
    """Histogram distance (total variation, 0..1) above which consecutive thumbnails are a cut candidate."""
    persist_seconds: float = 1.0
    """For this long after a candidate cut the picture must not return to what it was (flash suppression)."""
    min_shot_seconds: float = 1.0
    """Shortest shot, in seconds: cuts closer than this to the previous one are dropped."""


def colour_histograms(frames: np.ndarray, bins: int = 8) -> np.ndarray:
    """``[F, H, W, 3]`` uint8 -> normalised joint RGB histograms ``[F, bins**3]``."""
    q = (frames.astype(np.int64) * bins) // 256
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    flat = codes.reshape(len(frames), -1) + np.arange(len(frames))[:, None] * bins ** 3  # one range per frame
    hist = np.bincount(flat.ravel(), minlength=len(frames) * bins ** 3).reshape(len(frames), bins ** 3)
    return hist / codes[0].size


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(a - b).sum(-1)


def find_cuts(hist: np.ndarray, cfg: ShotConfig) -> np.ndarray:
    """Indices ``i`` (into the thumbnails) where a new shot starts."""
    if len(hist) < 2:
        return np.zeros(0, dtype=np.int64)
    step = _distance(hist[1:], hist[:-1])  # step[i-1]: change from i-1 to i
    cuts: list[int] = []
    min_gap = max(1, round(cfg.min_shot_seconds * cfg.fps))
    persist = max(1, int(np.ceil(cfg.persist_seconds * cfg.fps)))
    for i in np.flatnonzero(step > cfg.threshold) + 1:
        before = hist[max(0, i - persist - 1):i]
        after = hist[i:min(len(hist), i + persist + 1)]
        if _distance(before[:, None], after[None]).min() <= cfg.threshold:
            continue  # the picture before comes back soon after: a flash (its start or end), not a cut
        if cuts and i - cuts[-1] < min_gap:
            continue
        cuts.append(int(i))
    return np.asarray(cuts, dtype=np.int64)


def detect_shots(video: VideoFile, cfg: ShotConfig) -> np.ndarray:
    """Shot start times in seconds (the first shot starts at 0 and is not listed)."""
    info = video.info
    step = max(1, round(info.fps / cfg.fps))
    indices = np.arange(0, info.num_frames, step, dtype=np.int64)
    thumbs = video.read(indices, size=(cfg.width, cfg.height))
    cuts = find_cuts(colour_histograms(thumbs), ShotConfig(**{**cfg.__dict__, "fps": info.fps / step}))
    return indices[cuts] / info.fps


def shot_ids(timestamps: np.ndarray, starts_s: np.ndarray) -> np.ndarray:
    """Shot number of each timestamp (0 before the first cut)."""
    return np.searchsorted(np.asarray(starts_s, dtype=np.float64), np.asarray(timestamps), side="right")
