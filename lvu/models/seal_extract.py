"""SEAL's token extraction (paper Sec. 3.1, supplement "Implementation details"): one video's sampled frames ->
scene, object and action tokens, each an embedding in the encoder's image-text space with where and when it comes
from.

* **scene tokens**: ``scene_frames`` frames, uniformly spaced over the decoded ones, each through the frame encoder;
* **object tokens**: automatic masks on ``keyframes`` frames (transformers' ``Sam2Model`` prompted by a point grid;
  the filters and NMS of :mod:`lvu.models.seal_masks`), each mask's box expanded 2x, cropped, through the encoder;
* **action tokens**: an object detector (any transformers object-detection model) on every decoded frame, the
  detections linked by :class:`lvu.models.seal_tracks.Tracker` (appearance: the encoder's embedding of each
  detection's crop), tracklets cut to [L_min, L_max], and the union of a tracklet's boxes cropped from
  ``action_crop_frames`` of its frames and encoded (their mean: one token per tracklet).

The paper's own models (InternVL / EVA encoders, SAM2-Hiera-L, YOLOv10-X with BoT-SORT) are loaded from local
folders with ``from_pretrained``; YOLOv10 exists only in ultralytics (AGPL, downloads at run time), so the detector
slot takes transformers' detectors (DETR, YOLOS, RT-DETR, ...). Preprocessing is written here in torch rather than
through transformers' image processors: SAM2's needs torchvision, which cannot be installed beside our CPU torch.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForObjectDetection, Sam2Model

from lvu.errors import LvuError
from lvu.models.clip_encoders import IMAGENET_MEAN, IMAGENET_STD, ClipEncoder
from lvu.models.seal_masks import (
    KeptMasks,
    MaskCandidates,
    MaskGenerationConfig,
    filter_masks,
    point_grid,
    suppress_masks,
)
from lvu.models.seal_tracks import Tracker, TrackerConfig


class TokenKind(str, Enum):
    scene = "scene"
    object = "object"
    action = "action"


@dataclass
class DetectionConfig:
    """The detector behind action tokens (OPEN where the paper says nothing)."""

    score_threshold: float = 0.5
    """OPEN: detections scoring at most this are dropped (YOLOv10's usual 0.5 default; the paper gives none)."""
    max_per_frame: int = 20
    """OPEN: the best-scored detections kept per frame, bounding the tracker's and encoder's work."""
    batch_frames: int = 8
    """Frames per detector call (memory only)."""


@dataclass
class ExtractionConfig:
    """What to extract from each video (values from the supplement, OPEN otherwise)."""

    kinds: list[TokenKind] = field(default_factory=lambda: [TokenKind.scene, TokenKind.object, TokenKind.action])
    """Token kinds to extract (Ego4D-NLQ: scene and action only)."""
    scene_frames: int = 64
    """OPEN: scene tokens per video, uniformly spaced (the paper samples uniformly and gives no count)."""
    keyframes: int = 64
    """N_key: frames automatic masks run on (LVBench and Ego4D-NLQ 64, MovieChat 128)."""
    masks: MaskGenerationConfig = field(default_factory=MaskGenerationConfig)
    """SAM2 automatic mask generation (object tokens; the supplement's settings)."""
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    """The object detector's output filter (action tokens)."""
    tracking: TrackerConfig = field(default_factory=TrackerConfig)
    """Linking detections into tracklets (action tokens; L_min and L_max from the supplement)."""
    action_crop_frames: int = 1
    """Frames of a tracklet whose union-box crops are encoded and averaged into its token. 1: the middle frame, as
    the supplement does with a frame encoder (LVBench); more approximate a clip encoder (Ego4D-NLQ's EgoVLP)."""
    encode_batch: int = 64
    """Crops per encoder call (memory only)."""


@dataclass
class Token:
    """Where a token comes from: its kind, its time span (s), its box (x0, y0, x1, y1 as fractions of the frame)
    and the time of the frame it was cropped from (the middle frame for an action token)."""

    kind: TokenKind
    start_s: float
    end_s: float
    box: tuple[float, float, float, float]
    frame_s: float

    def record(self) -> dict[str, object]:
        return {"kind": self.kind.value, "start_s": round(self.start_s, 4), "end_s": round(self.end_s, 4),
                "box": [round(v, 5) for v in self.box], "frame_s": round(self.frame_s, 4)}


@dataclass
class VideoTokens:
    """One video's tokens: embeddings ``[N, D]`` and their :class:`Token` records, in extraction order (scene,
    object, action; each in time order)."""

    embeddings: torch.Tensor
    tokens: list[Token]

    def counts(self) -> dict[str, int]:
        return {kind.value: sum(t.kind is kind for t in self.tokens) for kind in TokenKind}


def _spread(count: int, total: int) -> list[int]:
    """``min(count, total)`` indices spread uniformly over ``range(total)`` (segment centres)."""
    count = min(count, total)
    return [int((i + 0.5) * total / count) for i in range(count)]


def _spans(times: torch.Tensor, chosen: list[int], duration_s: float) -> list[tuple[float, float]]:
    """The stretch of video each chosen frame stands for: from the midpoint with the previous chosen frame to the
    midpoint with the next (the first from 0, the last to the end)."""
    points = [float(times[i]) for i in chosen]
    bounds = [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(points)] + [max(duration_s, points[-1])]
    return list(itertools.pairwise(bounds))


def _normalised(box: torch.Tensor, width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 / width, y0 / height, x1 / width, y1 / height)


def crop_resized(frame: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[K, size, size, 3]``: each pixel box (x0, y0, x1, y1) of the uint8 frame ``[H, W, 3]``, at least one
    pixel, resized to ``size`` squared (the encoder's input; the crop is what the paper encodes, aspect not kept)."""
    height, width = frame.shape[:2]
    image = frame.permute(2, 0, 1).float()
    crops = []
    for box in boxes.round().long().tolist():
        x0, y0 = min(max(box[0], 0), width - 1), min(max(box[1], 0), height - 1)
        x1, y1 = max(min(box[2], width), x0 + 1), max(min(box[3], height), y0 + 1)
        patch = image[:, y0:y1, x0:x1][None]
        crops.append(F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
    if not crops:
        return torch.zeros(0, size, size, 3, dtype=torch.uint8)
    return torch.stack(crops).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def encode_images(encoder: ClipEncoder, images: torch.Tensor, batch: int) -> torch.Tensor:
    """float32 ``[K, D]`` embeddings of uint8 images ``[K, H, W, 3]``, ``batch`` at a time."""
    if len(images) == 0:
        return torch.zeros(0, encoder.dim)
    return torch.cat([encoder.embed(chunk[:, None]).cpu() for chunk in images.split(batch)])


@dataclass
class PixelRule:
    """How a model's image processor prepares frames (read from its ``preprocessor_config.json``), done here in
    torch: a fixed (height, width), or the shorter side to ``shortest_edge`` with the longer at most ``longest_edge``
    (DETR-style processors); then scaled to [0, 1] and, when ``normalize``, standardised (RT-DETR and D-FINE are not:
    their processors set ``do_normalize`` false)."""

    mean: torch.Tensor  # [1, 3, 1, 1]
    std: torch.Tensor
    normalize: bool = True
    fixed: tuple[int, int] | None = None
    shortest_edge: int | None = None
    longest_edge: int | None = None

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        if self.fixed is not None or self.shortest_edge is None:
            return self.fixed or (640, 640)
        scale = self.shortest_edge / min(height, width)
        if self.longest_edge is not None and max(height, width) * scale > self.longest_edge:
            scale = self.longest_edge / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def prepare(self, frames: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> ``[N, 3, h, w]`` as the model expects."""
        x = frames.to(device).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=self.size_for(*frames.shape[1:3]), mode="bilinear", antialias=True,
                          align_corners=False)
        if self.normalize:
            x = (x - self.mean.to(device)) / self.std.to(device)
        return x.to(dtype)


def pixel_rule(folder: Path, fixed: tuple[int, int] | None = None, config: Any = None) -> PixelRule:
    """The rule of the processor saved in ``folder``; ``fixed`` forces the size (SAM2's square input). Without a
    preprocessor file: ImageNet statistics and the config's ``image_size`` ((height, width), or one side of a square;
    else 640 square)."""
    settings = folder / "preprocessor_config.json"
    payload = json.loads(settings.read_text()) if settings.is_file() else {}
    rule = PixelRule(torch.tensor(payload.get("image_mean", IMAGENET_MEAN)).view(1, 3, 1, 1),
                     torch.tensor(payload.get("image_std", IMAGENET_STD)).view(1, 3, 1, 1),
                     normalize=bool(payload.get("do_normalize", True)), fixed=fixed)
    size = payload.get("size")
    if rule.fixed is None and isinstance(size, dict) and "height" in size and "width" in size:
        rule.fixed = (int(size["height"]), int(size["width"]))
    elif rule.fixed is None and isinstance(size, dict) and "shortest_edge" in size:
        rule.shortest_edge = int(size["shortest_edge"])
        rule.longest_edge = int(size["longest_edge"]) if size.get("longest_edge") else None
    elif rule.fixed is None:
        image_size = getattr(config, "image_size", None)
        if isinstance(image_size, (list, tuple)):  # (height, width), e.g. YOLOS's
            rule.fixed = (int(image_size[0]), int(image_size[1]))
        else:
            side = image_size if isinstance(image_size, int) else 640
            rule.fixed = (side, side)
    return rule


class MaskProposer:
    """SAM2 automatic masks on one frame: the frame resized to the model's square input (as SAM2's processor does),
    one image embedding, the point grid in batches of ``points_per_batch`` prompts (three masks each), the masks
    upsampled to the frame, filtered per batch, and one NMS over all."""

    def __init__(self, model: Sam2Model, cfg: MaskGenerationConfig, pixels: PixelRule) -> None:
        self.model, self.cfg, self.pixels = model, cfg, pixels
        self.size = int(model.config.prompt_encoder_config.image_size)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: MaskGenerationConfig, device: torch.device,
                        dtype: torch.dtype) -> MaskProposer:
        model, folder = _load_frozen(Sam2Model, path, "SAM2 model", device, dtype)
        side = int(model.config.prompt_encoder_config.image_size)
        return cls(model, cfg, pixel_rule(folder, fixed=(side, side)))

    @torch.no_grad()
    def propose(self, frame: torch.Tensor) -> KeptMasks:
        """The kept masks of uint8 ``frame [H, W, 3]``, boxes in its pixels."""
        height, width = frame.shape[:2]
        embeddings = self.model.get_image_embeddings(self.pixels.prepare(frame[None], self.device, self.dtype))
        points = point_grid(self.cfg.points_per_side).to(self.device) * self.size
        parts = []
        for chunk in points.split(self.cfg.points_per_batch):
            out = self.model(image_embeddings=embeddings, input_points=chunk[None, :, None, :].to(self.dtype),
                             input_labels=torch.ones(1, len(chunk), 1, dtype=torch.long, device=self.device),
                             multimask_output=True)
            logits = out.pred_masks[0].flatten(0, 1).float()  # [P * 3, h, w] low resolution
            scores = out.iou_scores[0].flatten().float()
            confident = scores > self.cfg.pred_iou_threshold  # before upsampling: most masks stop here
            logits = F.interpolate(logits[confident][:, None], size=(height, width), mode="bilinear",
                                   align_corners=False)[:, 0]
            parts.append(filter_masks(logits.cpu(), scores[confident].cpu(), self.cfg))
        return suppress_masks(MaskCandidates.join(parts, height, width), self.cfg)


@dataclass
class Detections:
    """One frame's detections: pixel boxes ``[K, 4]`` (x0, y0, x1, y1) and scores ``[K]``, best first."""

    boxes: torch.Tensor
    scores: torch.Tensor


class Detector:
    """A transformers object-detection model on whole frames. Softmax heads with a last "no object" class (DETR,
    YOLOS, Table Transformer) and sigmoid heads (Conditional and Deformable DETR, RT-DETR, D-FINE) are both read: a
    detection's score is its best object class; boxes come as normalised (cx, cy, w, h)."""

    def __init__(self, model: torch.nn.Module, cfg: DetectionConfig, pixels: PixelRule) -> None:
        self.model, self.cfg, self.pixels = model, cfg, pixels
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.softmax = model.config.model_type in SOFTMAX_DETECTORS

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: DetectionConfig, device: torch.device,
                        dtype: torch.dtype) -> Detector:
        model, folder = _load_frozen(AutoModelForObjectDetection, path, "object detector", device, dtype)
        return cls(model, cfg, pixel_rule(folder, config=model.config))

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> list[Detections]:
        """Detections of each uint8 frame of ``frames [N, H, W, 3]``."""
        height, width = frames.shape[1:3]
        scale = torch.tensor([width, height, width, height], dtype=torch.float)
        found = []
        for chunk in frames.split(self.cfg.batch_frames):
            out = self.model(pixel_values=self.pixels.prepare(chunk, self.device, self.dtype))
            logits = out.logits.float().cpu()
            probs = logits.softmax(-1)[..., :-1] if self.softmax else logits.sigmoid()
            scores = probs.max(-1).values  # [n, queries]
            cx, cy, w, h = out.pred_boxes.float().cpu().unbind(-1)
            boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).clamp(0, 1) * scale
            for frame_scores, frame_boxes in zip(scores, boxes, strict=True):
                keep = frame_scores > self.cfg.score_threshold
                order = frame_scores[keep].argsort(descending=True, stable=True)[:self.cfg.max_per_frame]
                found.append(Detections(frame_boxes[keep][order], frame_scores[keep][order]))
        return found


# Detectors whose logits end with a "no object" class (softmax); the others score each class with a sigmoid
# (transformers' post-processing for each: Conditional DETR's classifier has no "no object" class).
SOFTMAX_DETECTORS = frozenset({"detr", "yolos", "table-transformer"})


def _load_frozen(loader: Any, path: str | Path, what: str, device: torch.device,
                 dtype: torch.dtype) -> tuple[torch.nn.Module, Path]:
    """``loader.from_pretrained(path)``, frozen, in eval mode, on ``device`` in ``dtype``; and its folder."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise LvuError(f"{what} {folder}: no config.json (give a folder written by save_pretrained)")
    try:
        model = loader.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise LvuError(f"cannot load {what} {folder}: {exc}") from None
    return model.to(device, dtype).eval().requires_grad_(False), folder


@dataclass
class Extractor:
    """The models extraction needs (those of kinds not extracted may be None) and its settings."""

    cfg: ExtractionConfig
    encoder: ClipEncoder
    masks: MaskProposer | None = None
    detector: Detector | None = None

    def extract(self, frames: torch.Tensor, times: torch.Tensor, duration_s: float) -> VideoTokens:
        """The tokens of one video from its decoded frames (uint8 ``[T, H, W, 3]``, in time order) and their times
        ``[T]`` (s)."""
        parts = [self._scene(frames, times, duration_s), self._objects(frames, times, duration_s),
                 self._actions(frames, times)]
        tokens = [t for _, records in parts for t in records]
        embeddings = torch.cat([e for e, _ in parts]) if tokens else torch.zeros(0, self.encoder.dim)
        return VideoTokens(embeddings, tokens)

    def _wants(self, kind: TokenKind) -> bool:
        return kind in [TokenKind(k) for k in self.cfg.kinds]

    def _empty(self) -> tuple[torch.Tensor, list[Token]]:
        return torch.zeros(0, self.encoder.dim), []

    def _scene(self, frames: torch.Tensor, times: torch.Tensor,
               duration_s: float) -> tuple[torch.Tensor, list[Token]]:
        if not self._wants(TokenKind.scene) or len(frames) == 0:
            return self._empty()
        chosen = _spread(self.cfg.scene_frames, len(frames))
        embeddings = encode_images(self.encoder, frames[chosen], self.cfg.encode_batch)
        whole = (0.0, 0.0, 1.0, 1.0)
        return embeddings, [Token(TokenKind.scene, a, b, whole, float(times[i]))
                            for i, (a, b) in zip(chosen, _spans(times, chosen, duration_s), strict=True)]

    def _objects(self, frames: torch.Tensor, times: torch.Tensor,
                 duration_s: float) -> tuple[torch.Tensor, list[Token]]:
        if not self._wants(TokenKind.object) or len(frames) == 0:
            return self._empty()
        if self.masks is None:
            raise LvuError("object tokens need a SAM2 model (seal.sam2)")
        height, width = frames.shape[1:3]
        chosen = _spread(self.cfg.keyframes, len(frames))
        embeddings, tokens = [], []
        for index, (start, end) in zip(chosen, _spans(times, chosen, duration_s), strict=True):
            kept = self.masks.propose(frames[index])
            crops = crop_resized(frames[index], kept.crops, self.encoder.image_size)
            embeddings.append(encode_images(self.encoder, crops, self.cfg.encode_batch))
            tokens += [Token(TokenKind.object, start, end, _normalised(box, width, height), float(times[index]))
                       for box in kept.crops]
        return torch.cat(embeddings), tokens

    def _actions(self, frames: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, list[Token]]:
        if not self._wants(TokenKind.action) or len(frames) == 0:
            return self._empty()
        if self.detector is None:
            raise LvuError("action tokens need an object detector (seal.detector)")
        height, width = frames.shape[1:3]
        tracker = Tracker(self.cfg.tracking)
        # The detections' crops are encoded ``encode_batch`` at a time across frames (a call per frame would run the
        # encoder on a handful of crops each), then fed to the tracker frame by frame, in order.
        pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (frame, boxes, crops)

        def track_pending() -> None:
            if not pending:
                return
            looks = encode_images(self.encoder, torch.cat([c for _, _, c in pending]), self.cfg.encode_batch)
            for (index, boxes, _), features in zip(pending, looks.split([len(b) for _, b, _ in pending]),
                                                   strict=True):
                tracker.update(index, boxes, features)
            pending.clear()

        for index, found in enumerate(self.detector.detect(frames)):
            pending.append((index, found.boxes, crop_resized(frames[index], found.boxes, self.encoder.image_size)))
            if sum(len(boxes) for _, boxes, _ in pending) >= self.cfg.encode_batch:
                track_pending()
        track_pending()
        pieces = tracker.tracklets()
        if not pieces:
            return self._empty()
        crops, counts, tokens = [], [], []
        for piece in pieces:
            picked = [piece.frames[i] for i in _spread(self.cfg.action_crop_frames, len(piece.frames))]
            crops += [crop_resized(frames[f], piece.box[None], self.encoder.image_size) for f in picked]
            counts.append(len(picked))
            middle = piece.frames[len(piece.frames) // 2]
            tokens.append(Token(TokenKind.action, float(times[piece.frames[0]]), float(times[piece.frames[-1]]),
                                _normalised(piece.box, width, height), float(times[middle])))
        looks = encode_images(self.encoder, torch.cat(crops), self.cfg.encode_batch)  # every tracklet's crops at once
        return torch.stack([part.mean(0) for part in looks.split(counts)]), tokens
