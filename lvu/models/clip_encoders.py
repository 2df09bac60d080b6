"""Frozen clip encoders for LV-MAE's clip embeddings (paper Sec. 3.1), loaded with ``from_pretrained(path)``.

* image encoders (CLIP, SigLIP): every frame of a clip is embedded and the clip embedding is their mean;
* video encoders (X-CLIP, VideoMAE): the clip's frames go in together. X-CLIP gives its projected video embedding;
  VideoMAE the mean of its last hidden states.

Pixels are resized (shorter side) and centre-cropped to the encoder's image size, scaled to [0, 1] and normalised
with the mean/std of the checkpoint's ``preprocessor_config.json`` when there is one, else the family's defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, CLIPModel, SiglipModel, VideoMAEModel, XCLIPModel

from lvu.errors import LvuError

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

# model_type -> (kind, default mean, default std)
FAMILIES = {
    "clip": ("image", CLIP_MEAN, CLIP_STD),
    "siglip": ("image", HALF, HALF),
    "x_clip": ("video", CLIP_MEAN, CLIP_STD),
    "xclip": ("video", CLIP_MEAN, CLIP_STD),
    "videomae": ("video", IMAGENET_MEAN, IMAGENET_STD),
}


def _pooled(output) -> torch.Tensor:
    # transformers 5 returns model outputs from get_*_features; 4.x returned the tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@dataclass
class ClipEncoder:
    """A frozen encoder that maps clips of frames to one embedding each."""

    model: torch.nn.Module
    family: str
    kind: str  # "image" or "video"
    image_size: int
    num_frames: int | None  # frames a video encoder requires per clip (None: any)
    mean: torch.Tensor
    std: torch.Tensor
    dim: int
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", dtype: str = "float32") -> ClipEncoder:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise LvuError(f"encoder {path}: no config.json (give a folder written by save_pretrained)")
        config = AutoConfig.from_pretrained(path)
        family = config.model_type
        if family not in FAMILIES:
            raise LvuError(f"encoder {path}: model type '{family}' is not supported; use CLIP, SigLIP, X-CLIP or "
                           f"VideoMAE")
        kind, mean, std = FAMILIES[family]
        preprocessor = path / "preprocessor_config.json"
        if preprocessor.is_file():
            settings = json.loads(preprocessor.read_text())
            mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
        torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                    ("cpu" if device == "auto" else device))
        torch_dtype = getattr(torch, dtype)
        model = _load(family, path).to(torch_device, torch_dtype).eval().requires_grad_(False)
        vision = getattr(config, "vision_config", config)
        num_frames = getattr(vision, "num_frames", None) if kind == "video" else None
        if family == "videomae":
            num_frames = config.num_frames
        encoder = cls(model=model, family=family, kind=kind, image_size=int(vision.image_size), num_frames=num_frames,
                      mean=torch.tensor(mean, device=torch_device).view(1, 3, 1, 1),
                      std=torch.tensor(std, device=torch_device).view(1, 3, 1, 1), dim=0, device=torch_device,
                      dtype=torch_dtype)
        probe = torch.zeros(1, num_frames or 1, encoder.image_size, encoder.image_size, 3, dtype=torch.uint8)
        encoder.dim = int(encoder.embed(probe).shape[-1])
        return encoder

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, 3, S, S]`` (shorter side resized, centre crop)."""
        x = frames.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        scale = self.image_size / min(h, w)
        size = (max(self.image_size, round(h * scale)), max(self.image_size, round(w * scale)))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        top, left = (size[0] - self.image_size) // 2, (size[1] - self.image_size) // 2
        x = x[..., top:top + self.image_size, left:left + self.image_size]
        return ((x - self.mean) / self.std).to(self.dtype)

    @torch.no_grad()
    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, T, H, W, 3]`` clips -> float32 ``[N, D]`` embeddings."""
        n, t = clips.shape[:2]
        if self.num_frames is not None and t != self.num_frames:
            raise LvuError(f"{self.family} encoder takes {self.num_frames} frames per clip, got {t}; "
                           f"set --frames-per-clip {self.num_frames}")
        pixels = self.preprocess(clips.reshape(n * t, *clips.shape[2:]))
        if self.kind == "image":
            features = _pooled(self.model.get_image_features(pixel_values=pixels)).float()
            return features.view(n, t, -1).mean(1)
        pixels = pixels.view(n, t, *pixels.shape[1:])
        if self.family == "videomae":
            return self.model(pixel_values=pixels).last_hidden_state.float().mean(1)
        return _pooled(self.model.get_video_features(pixel_values=pixels)).float()


def _load(family: str, path: Path) -> torch.nn.Module:
    classes = {"clip": CLIPModel, "siglip": SiglipModel, "x_clip": XCLIPModel, "xclip": XCLIPModel,
               "videomae": VideoMAEModel}
    try:
        return classes[family].from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise LvuError(f"cannot load encoder {path}: {exc}") from None
