"""Sample decoders: raw shard members -> tensors. Tasks pick one and hand it to the loader.

Decoders raise :class:`~lvu.data.shards.BadSample` (or :class:`~lvu.data.video.VideoError`) for data that is bad
in itself; the loader counts and replaces such samples. Data that contradicts the recipe (features of the wrong
width) raises :class:`~lvu.errors.LvuError`: skipping it would hide a configuration mistake.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import numpy as np
import torch
from PIL import Image

from lvu.data.sampling import SamplerConfig, sample_frames, sample_window
from lvu.data.shards import BadSample, parse_json
from lvu.data.shots import ShotConfig, detect_shots, shot_ids
from lvu.data.video import CompositeVideo, VideoFile
from lvu.errors import LvuError

log = logging.getLogger(__name__)

VIDEO_EXTS = ("mp4", "webm", "mkv", "avi", "mov", "m4v")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_PART = re.compile(r"^part(\d+)\.(?:" + "|".join(VIDEO_EXTS) + r")$")


def open_video(raw: dict[str, Any], threads: int = 1) -> VideoFile | CompositeVideo:
    """The sample's video: one file (``mp4``...) or a composite of ``partNNN.mp4`` members (``lvu data concat``)."""
    for ext in VIDEO_EXTS:
        if ext in raw:
            return VideoFile(raw[ext], threads=threads)
    parts = sorted((int(m.group(1)), name) for name in raw if isinstance(name, str) and (m := _PART.match(name)))
    if parts:
        return CompositeVideo([VideoFile(raw[name], threads=threads) for _, name in parts])
    raise BadSample("missing_video", "sample has no video member", shard=raw.get("__shard__", ""),
                    key=raw.get("__key__", ""))


def has_media(raw: dict[str, Any]) -> bool:
    """Whether a raw sample holds a video (file or parts) or an image."""
    return any(ext in raw for ext in (*VIDEO_EXTS, *IMAGE_EXTS)) or any(
        isinstance(name, str) and _PART.match(name) for name in raw)


def image_ext(raw: dict[str, Any]) -> str | None:
    return next((ext for ext in IMAGE_EXTS if ext in raw), None)


def decode_image(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as exc:  # PIL raises many types for broken files
        raise BadSample("undecodable_image", f"cannot decode image ({exc})") from None


class VideoDecoder:
    """Decode a video (or image) sample into sampled frames with their timestamps.

    Returns ``frames`` (uint8 ``[N, H, W, 3]``), ``timestamps`` (seconds), ``groups``/``segments`` when the sampler
    makes them, ``duration_s`` and the ``annotation`` JSON. An image sample becomes a one-frame video.

    Args:
        sampler: which frames to take.
        size: ``(width, height)`` to resize frames to while decoding; None keeps the original size.
        threads: decoder threads per worker.
        allow_images: accept image samples (LinVT / FiLA mix image and video data).
        allow_text: accept samples with no image or video (text-only instruction data): zero frames, ``is_text``.
        allow_videos: accept video samples (an image-only stage skips them as ``unwanted_video``).
        windows: a sample whose annotation has ``clip`` ``[start_s, end_s]`` (a benchmark question about one stretch
            of its video: MVBench) gets ``sampler.num_frames`` frames from that stretch only.
    """

    def __init__(self, sampler: SamplerConfig, size: tuple[int, int] | None = None, threads: int = 1,
                 allow_images: bool = True, shots: ShotConfig | None = None, allow_text: bool = False,
                 allow_videos: bool = True, windows: bool = False) -> None:
        self.sampler, self.size, self.threads, self.allow_images = sampler, size, threads, allow_images
        self.allow_text, self.allow_videos, self.windows = allow_text, allow_videos, windows
        self.shots = shots if shots is not None and shots.enabled else None

    def __call__(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        annotation = parse_json(raw)
        if self.allow_text and not has_media(raw):
            width, height = self.size or (0, 0)
            return {"frames": torch.zeros((0, height, width, 3), dtype=torch.uint8), "timestamps": np.zeros(0),
                    "groups": None, "segments": None, "duration_s": 0.0, "annotation": annotation,
                    "is_image": False, "is_text": True}
        ext = image_ext(raw) if self.allow_images else None
        if ext is not None and not any(e in raw for e in VIDEO_EXTS):
            image = decode_image(raw[ext])
            if self.size is not None:
                image = np.asarray(Image.fromarray(image).resize(self.size, Image.BICUBIC))
            return {"frames": torch.from_numpy(image[None].copy()), "timestamps": np.zeros(1), "groups": None,
                    "segments": None, "duration_s": 0.0, "annotation": annotation, "is_image": True,
                    **({"shots": np.zeros(1, dtype=np.int64), "shot_starts_s": np.zeros(0)} if self.shots else {})}
        if not self.allow_videos:
            raise BadSample("unwanted_video", "this stage takes no videos", shard=raw.get("__shard__", ""),
                            key=raw.get("__key__", ""))
        video = open_video(raw, self.threads)
        info = video.info
        window = annotation.get("clip") if self.windows else None
        picked = sample_window(self.sampler.num_frames, info, float(window[0]), float(window[1])) if window else None
        if window and picked is None:
            log.warning("%s: its window %.1f-%.1f s lies outside the %.1f s video: frames from the whole video",
                        raw.get("__key__", ""), float(window[0]), float(window[1]), info.duration_s)
        if picked is None:
            picked = sample_frames(self.sampler, info, rng)
        frames = video.read(picked.indices, size=self.size)
        sample = {
            "frames": torch.from_numpy(frames),
            "timestamps": picked.timestamps,
            "groups": picked.groups,
            "segments": picked.segments,
            "duration_s": info.duration_s,
            "annotation": annotation,
            "is_image": False,
        }
        if self.shots is not None:  # shot starts (s) and each sampled frame's shot number
            starts = detect_shots(video, self.shots)
            sample.update(shot_starts_s=starts, shots=shot_ids(picked.timestamps, starts))
        return sample


class FeatureDecoder:
    """Decode a precomputed-feature sample (``npy`` ``[T, D]`` + ``json``), rejecting NaN/Inf and empty arrays.

    Args:
        dim: expected feature width; a mismatch is an error naming shard, key, expected and found width.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim

    def __call__(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        annotation = parse_json(raw)
        where = {"shard": raw.get("__shard__", ""), "key": raw.get("__key__", "")}
        if "npy" not in raw:
            if has_media(raw):  # the wrong kind of shards altogether, not one bad sample among good ones
                raise LvuError(
                    f"shard {where['shard']}, key {where['key']} holds a video or image, not clip features (.npy): "
                    f"this task reads clip-embedding shards; make them with `lvu data embed VIDEO_SHARDS OUT "
                    f"--encoder MODEL` and give those"
                )
            raise BadSample("missing_features", "sample has no .npy features", **where)
        try:
            features = np.load(io.BytesIO(raw["npy"]), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise BadSample("bad_features", f"cannot read .npy ({exc})", **where) from None
        if features.ndim != 2:
            raise BadSample("bad_features", f"features must be [clips, width], got shape {features.shape}", **where)
        if self.dim is not None and features.shape[1] != self.dim:
            raise LvuError(
                f"shard {where['shard']}, key {where['key']}: feature width {features.shape[1]}, expected "
                f"{self.dim} (model.input_dim); were these features made by another encoder?"
            )
        if features.shape[0] == 0:
            raise BadSample("zero_clips", "video has zero clips", **where)
        if not np.isfinite(features).all():
            raise BadSample("nonfinite_features", "features contain NaN or Inf", **where)
        return {"features": torch.from_numpy(features.astype(np.float32)), "annotation": annotation}
