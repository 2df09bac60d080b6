"""Frozen clip encoders for LV-MAE's clip embeddings (paper Sec. 3.1), loaded with ``from_pretrained(path)``.

* image encoders (CLIP, SigLIP): every frame of a clip is embedded and the clip embedding is their mean;
* video encoders (X-CLIP, VideoMAE, V-JEPA 2): the clip's frames go in together. X-CLIP gives its projected video
  embedding; VideoMAE and V-JEPA 2 the mean of their last hidden states;
* Video-LLaVA's video tower (``video_llava``): a frame encoder like CLIP's, read out of a Video-LLaVA checkpoint.

The paper's encoders, LanguageBind and InternVideo2, are not in transformers. Stand-ins, by closeness:

* LanguageBind-Video: Video-LLaVA's ``video_tower`` *is* LanguageBind's video encoder (a CLIP ViT-L/14, 1024 wide, as
  Video-LLaVA took it from LanguageBind; transformers' port runs it frame by frame). Point ``--encoder`` at a
  Video-LLaVA folder (e.g. LanguageBind/Video-LLaVA-7B-hf); only the video tower's tensors are read, and each clip is
  the mean of its frames' pooled [CLS] states: 1024-wide, the paper's width.
* InternVideo2: its stage-2 clip embedding (the one LV-MAE reads) comes from video-text contrastive training, which
  X-CLIP shares; V-JEPA 2 is the masked-video-modelling video ViT closest to InternVideo2's stage 1.

Pixels are resized (shorter side) and centre-cropped to the encoder's image size, scaled to [0, 1] and normalised
with the mean/std of the checkpoint's ``preprocessor_config.json`` when there is one, else the family's defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import (
    AutoConfig,
    CLIPModel,
    CLIPVisionModel,
    SiglipModel,
    VideoMAEModel,
    VJEPA2Model,
    XCLIPModel,
)

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
    "vjepa2": ("video", IMAGENET_MEAN, IMAGENET_STD),
    "video_llava": ("image", CLIP_MEAN, CLIP_STD),
}
SUPPORTED = "CLIP, SigLIP, X-CLIP, VideoMAE, V-JEPA 2 or Video-LLaVA (its LanguageBind video tower)"


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
            raise LvuError(f"encoder {path}: model type '{family}' is not supported; use {SUPPORTED}")
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
        image_size = config.crop_size if family == "vjepa2" else vision.image_size
        if family == "vjepa2":  # rotary positions take any clip length of whole tubelets; a clip is one tubelet+
            num_frames = None
        encoder = cls(model=model, family=family, kind=kind, image_size=int(image_size), num_frames=num_frames,
                      mean=torch.tensor(mean, device=torch_device).view(1, 3, 1, 1),
                      std=torch.tensor(std, device=torch_device).view(1, 3, 1, 1), dim=0, device=torch_device,
                      dtype=torch_dtype)
        probe_frames = num_frames or (config.tubelet_size if family == "vjepa2" else 1)
        probe = torch.zeros(1, probe_frames, encoder.image_size, encoder.image_size, 3, dtype=torch.uint8)
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
        if self.family == "vjepa2" and t % self.model.config.tubelet_size:
            raise LvuError(f"vjepa2 encoder takes whole tubelets of {self.model.config.tubelet_size} frames, got {t} "
                           "frames per clip; set --frames-per-clip to a multiple")
        pixels = self.preprocess(clips.reshape(n * t, *clips.shape[2:]))
        if self.family == "video_llava":
            return self.model(pixel_values=pixels).pooler_output.float().view(n, t, -1).mean(1)
        if self.kind == "image":
            features = _pooled(self.model.get_image_features(pixel_values=pixels)).float()
            return features.view(n, t, -1).mean(1)
        pixels = pixels.view(n, t, *pixels.shape[1:])
        if self.family == "videomae":
            return self.model(pixel_values=pixels).last_hidden_state.float().mean(1)
        if self.family == "vjepa2":
            return self.model(pixel_values_videos=pixels, skip_predictor=True).last_hidden_state.float().mean(1)
        return _pooled(self.model.get_video_features(pixel_values=pixels)).float()


def _text_batch(encoder: ClipEncoder, tokenizer: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    if encoder.family not in ("clip", "siglip"):
        raise LvuError(f"query embeddings need a CLIP or SigLIP encoder (an image-text model), not {encoder.family}")
    limit = encoder.model.config.text_config.max_position_embeddings
    padding = "max_length" if encoder.family == "siglip" else True  # SigLIP was trained on max-length padding
    enc = tokenizer(texts, padding=padding, truncation=True, max_length=limit, return_tensors="pt")
    return {k: v.to(encoder.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def embed_text(encoder: ClipEncoder, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """float32 ``[Q, D]`` text embeddings of a CLIP or SigLIP encoder (its text tower), in the space of its image
    embeddings: the query side of SEAL's relevance. ``tokenizer``: the one saved with the encoder."""
    return text_states(encoder, tokenizer, texts)[0]


@torch.no_grad()
def text_states(encoder: ClipEncoder, tokenizer: Any, texts: list[str]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The texts' embeddings ``[Q, D]`` (as :func:`embed_text`), their token states ``[Q, L, H]`` (the text tower's
    last layer: what a grounding head attends to) and the token mask ``[Q, L]``, all float32 / bool on the CPU."""
    enc = _text_batch(encoder, tokenizer, texts)
    mask = enc.get("attention_mask", torch.ones_like(enc["input_ids"])).bool()
    if encoder.family == "siglip":  # SigLIP's text tower pools the last position and takes no attention mask
        enc.pop("attention_mask", None)
    out = encoder.model.get_text_features(**enc)
    if isinstance(out, torch.Tensor):  # transformers 4.x returned the projection alone: the states need a pass more
        pooled, states = out, encoder.model.text_model(**enc).last_hidden_state
    else:  # one pass: the text tower's output, its pooled vector projected (CLIP) or as is (SigLIP)
        pooled, states = out.pooler_output, out.last_hidden_state
    return pooled.float().cpu(), states.float().cpu(), mask.cpu()


def _load(family: str, path: Path) -> torch.nn.Module:
    classes = {"clip": CLIPModel, "siglip": SiglipModel, "x_clip": XCLIPModel, "xclip": XCLIPModel,
               "videomae": VideoMAEModel, "vjepa2": VJEPA2Model}
    try:
        if family == "video_llava":
            return _video_tower(path)
        return classes[family].from_pretrained(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise LvuError(f"cannot load encoder {path}: {exc}") from None


def _video_tower(path: Path) -> CLIPVisionModel:
    """Video-LLaVA's video tower alone, its tensors read from the checkpoint's safetensors files (the 7B LLM beside
    it is never loaded). Written by hand because transformers loads the tower only as part of the whole model; the
    prefix before ``video_tower.`` differs between checkpoint versions (``video_tower.``, ``model.video_tower.``)."""
    tower = CLIPVisionModel(AutoConfig.from_pretrained(path).vision_config)
    state: dict[str, torch.Tensor] = {}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise LvuError(f"encoder {path}: no .safetensors files (Video-LLaVA towers are read from safetensors)")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if "video_tower." in key:
                    state[key.split("video_tower.", 1)[1]] = f.get_tensor(key)
    tower.load_state_dict(state, strict=True)
    return tower
