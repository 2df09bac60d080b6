"""Hosts for transformers' vision-language families, and a host composed from a vision encoder and an LLM.

Each family gets per-frame visual tokens from its own vision tower, intermediate layer and projector, exactly as
its image path computes them, so a video method that passes those tokens through unchanged reproduces the host's
image behaviour (tested against the family's own ``get_image_features``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

from lvu.errors import LvuError
from lvu.models.vlm.base import CLIP_NORM, IMAGENET_NORM, SIGLIP_NORM, Host, ParameterUser, PartPaths

LLM_PATHS = ("model.model.language_model", "model.lm_head")


def _select_layer(hidden_states: tuple[torch.Tensor, ...], layer: int | list[int]) -> torch.Tensor:
    if isinstance(layer, int):
        return hidden_states[layer]
    return torch.cat([hidden_states[i] for i in layer], dim=-1)


class LlavaOnevisionHost(Host):
    """LLaVA-OneVision: SigLIP tower -> ``vision_feature_layer`` -> 2-layer MLP projector -> Qwen2.

    Per frame: the (H/patch)^2 projected patch tokens of the base resolution, without AnyRes tiling (a video frame
    in LLaVA-OneVision is never tiled) and without the image-newline token. Its video path pools each frame's grid
    2x2 (bilinear, 27x27 -> 14x14 at 384 px) and ends each video with one image-newline token.
    """

    family = "llava_onevision"
    image_norm = SIGLIP_NORM
    placeholder_config = "image_token_index"
    part_paths: ClassVar[PartPaths] = {"vision": ("model.model.vision_tower",),
                                       "projector": ("model.model.multi_modal_projector", "model.model.image_newline"),
                                       "llm": LLM_PATHS}

    def __init__(self, model: nn.Module | None = None, tokenizer: Any = None) -> None:
        super().__init__(model, tokenizer)
        # The image newline is read outside its module's forward (get_image_features, the video path): see
        # ParameterUser.
        self.newline_user = ParameterUser(self.model.model.image_newline)

    def vision_features(self, frames: torch.Tensor) -> torch.Tensor:
        hidden = self.model.model.vision_tower(frames, output_hidden_states=True).hidden_states
        features = _select_layer(hidden, self.model.config.vision_feature_layer)
        if self.model.config.vision_feature_select_strategy == "default":
            features = features[:, 1:]  # drop [CLS] (towers that have one)
        return features

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.model.multi_modal_projector(features)

    # The video path is transformers' ``get_video_features``, for videos of different lengths in one vision pass:
    # each frame's projected grid pooled 2x2, the frames of a video in a row, then the image-newline token.
    def pool_video_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.model.apply_pooling(tokens)

    def video_end(self) -> torch.Tensor:
        return self.model.model.image_newline[None]

    def encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The AnyRes image path for square images at the tower's input size S: the processor makes a base view and
        one S x S tile of the same pixels (the best grid pinpoint for such an image is [S, S]); the model packs the
        tile's tokens with an image-newline token per row after the base view's tokens."""
        config = self.model.config
        size = config.vision_config.image_size
        n, _, h, w = images.shape
        views = image_size_to_num_patches((h, w), config.image_grid_pinpoints, size)
        if (h, w) != (size, size) or views != 2:
            raise LvuError(f"{self.family} host: images must be {size}x{size} px (the vision tower's input size) "
                           f"with [{size}, {size}] among image_grid_pinpoints; got {h}x{w}")
        pixels = images[:, None].expand(-1, 2, -1, -1, -1)
        sizes = torch.tensor([[h, w]] * n, device=images.device)
        out = self.newline_user(
            self.model.model.get_image_features, pixels, sizes, vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            vision_aspect_ratio=config.vision_aspect_ratio)
        return list(out.pooler_output)


class QwenVLHost(Host):
    """Qwen2-VL and Qwen2.5-VL: ViT with 2x2 patch merger (the projector) and M-RoPE positions in the LLM.

    A frame is a single-image "video" of temporal length 1: its patches are repeated over the temporal patch, as
    Qwen's image processor does. Frames need sides divisible by ``patch_size * spatial_merge_size``.
    """

    family = "qwen_vl"
    image_norm = CLIP_NORM
    part_paths: ClassVar[PartPaths] = {"vision": ("model.model.visual",), "projector": ("model.model.visual.merger",),
                                       "llm": LLM_PATHS}
    visual_open, visual_close = "<|vision_start|>", "<|vision_end|>"
    visual_separator = ""  # Qwen's template: "<|vision_end|>What ..."

    def patchify(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, 3, H, W]`` -> (pixel rows ``[N * gh * gw, 3 * t * p * p]``, ``image_grid_thw [N, 3]``)."""
        vc = self.model.config.vision_config
        p, m, t = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
        n, c, h, w = frames.shape
        if h % (p * m) or w % (p * m):
            raise LvuError(f"{self.family} host: frames of {h}x{w} px; sides must be multiples of {p * m} "
                           f"(patch {p} x merge {m})")
        gh, gw = h // p, w // p
        x = frames.reshape(n, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1)
        grid = torch.tensor([[1, gh, gw]] * n, dtype=torch.long, device=frames.device)
        return x.reshape(n * gh * gw, c * t * p * p), grid

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        pixels, grid = self.patchify(frames)
        return torch.stack(list(self.model.model.get_image_features(pixels, grid).pooler_output))

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     image_sizes: list[list[tuple[int, int]]] | None = None) -> torch.Tensor:
        """M-RoPE positions ``[3, B, L]``. A sample with image sizes holds those images' patch grids (each inside
        vision start/end tokens, as Qwen's template writes it) and gets Qwen's 2-D image positions; every other
        token (video-method tokens included) is placed like text, one position after another."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[None].repeat(3, 1, 1)
        vc = self.model.config.vision_config
        for b, sizes in enumerate(image_sizes or []):
            if not sizes:
                continue
            grid = torch.tensor([[1, h // vc.patch_size, w // vc.patch_size] for h, w in sizes],
                                device=input_ids.device)
            ids, mask = input_ids[b:b + 1], attention_mask[b:b + 1]
            mm = (ids == self.placeholder_id).int()
            positions[:, b:b + 1] = self.model.model.get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=grid,
                                                                    attention_mask=mask)[0]
        return positions

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> Any:
        self.model.model.rope_deltas = None  # a value left by an earlier generate() would shift these positions
        return super().forward(inputs_embeds, attention_mask, labels, position_ids)

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int = 32,
                 position_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        self.model.model.rope_deltas = None
        return super().generate(inputs_embeds, attention_mask, max_new_tokens, position_ids, **kwargs)


class InternVLHost(Host):
    """InternVL (transformers' native port): InternViT -> pixel shuffle (downsample) -> MLP projector -> LLM."""

    family = "internvl"
    image_norm = IMAGENET_NORM
    visual_open, visual_close = "<img>", "</img>"
    part_paths: ClassVar[PartPaths] = {"vision": ("model.model.vision_tower",),
                                       "projector": ("model.model.multi_modal_projector",), "llm": LLM_PATHS}

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        out = self.model.model.get_image_features(pixel_values=frames)
        return out.pooler_output if hasattr(out, "pooler_output") else out


COMPOSED_RECORD = "composed.json"  # marks a folder written by ComposedHost.save_pretrained


class ComposedHost(Host):
    """A LLaVA-style model from parts: a named vision encoder, a named LLM, and a 2-layer GELU MLP projector (the
    LLaVA-1.5 / FiLA-Video stage-1 recipe): new, or trained and saved with the host by :meth:`save_pretrained`.
    The placeholder token is added to the tokenizer (and the LLM's embeddings) if missing.

    Args:
        video_pool: the video path pools each frame's square patch grid by this factor (bilinear, rounding up), as
            LLaVA-OneVision pools 2x2; 1 keeps every token.
        video_newline: a learned token closes each video (LLaVA-OneVision's image newline; part of the projector).
    """

    family = "composed"
    language_model_path = "model"
    part_paths: ClassVar[PartPaths] = {"vision": ("vision",), "projector": ("projector", "newline"), "llm": ("model",)}

    def __init__(self, vision_path: str | Path, llm_path: str | Path, *, vision_layer: int = -2,
                 placeholder: str = "<image>", drop_cls: bool = False, projector: Path | None = None,
                 video_pool: int = 1, video_newline: bool = False,
                 from_pretrained: dict[str, Any] | None = None) -> None:
        super().__init__()
        loaded = transformers.AutoModel.from_pretrained(str(vision_path), **(from_pretrained or {}))
        # Dual encoders (CLIP, SigLIP) keep their image side in vision_model. The loaded model is kept (not as a
        # submodule: its parameters are self.vision's) so that save_pretrained writes a folder it can load again.
        self.vision = getattr(loaded, "vision_model", loaded)
        object.__setattr__(self, "vision_checkpoint", loaded)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(llm_path), **(from_pretrained or {}))
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(llm_path))
        self.placeholder, self.vision_layer, self.drop_cls = placeholder, vision_layer, drop_cls
        self.video_pool = video_pool
        self.image_norm = processor_norm(Path(vision_path)) or self.image_norm
        if placeholder not in self.tokenizer.get_vocab():
            self.tokenizer.add_special_tokens({"additional_special_tokens": [placeholder]})
            self.model.resize_token_embeddings(len(self.tokenizer))
        width = self.model.get_input_embeddings().embedding_dim
        self.projector = nn.Sequential(nn.Linear(self.vision.config.hidden_size, width), nn.GELU(),
                                       nn.Linear(width, width))
        # LLaVA-OneVision initialises its image newline as randn / sqrt(width).
        self.newline = nn.Parameter(torch.randn(1, width) / width**0.5) if video_newline else None
        if self.newline is not None:
            self.newline_user = ParameterUser(self.newline)  # read outside any forward of its owner (the host)
        if projector is not None:
            weights = load_file(str(projector))
            if self.newline is not None:
                self.newline.data.copy_(weights.pop("newline"))
            self.projector.load_state_dict(weights)

    def checkpointed_models(self) -> list[nn.Module]:
        return [self.vision_checkpoint, self.model]

    def vision_features(self, frames: torch.Tensor) -> torch.Tensor:
        hidden = self.vision(pixel_values=frames, output_hidden_states=True).hidden_states[self.vision_layer]
        return hidden[:, 1:] if self.drop_cls else hidden

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(features)

    def pool_video_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.video_pool == 1:
            return tokens
        n, length, d = tokens.shape
        side = math.isqrt(length)
        if side * side != length:
            raise LvuError(f"composed host: video_pool needs a square patch grid per frame, got {length} tokens")
        grid = tokens.view(n, side, side, d).permute(0, 3, 1, 2)
        size = math.ceil(side / self.video_pool)
        pooled = F.interpolate(grid, size=[size, size], mode="bilinear")
        return pooled.permute(0, 2, 3, 1).reshape(n, size * size, d)

    def video_end(self) -> torch.Tensor:
        return self.newline if self.newline is not None else super().video_end()

    def save_pretrained(self, folder: Path) -> None:
        """``vision/``, ``llm/`` (with the tokenizer), ``projector.safetensors`` and ``composed.json``: a folder
        ``load_host`` (and so ``host.path``) takes."""
        folder.mkdir(parents=True, exist_ok=True)
        self.vision_checkpoint.save_pretrained(folder / "vision")
        self.model.save_pretrained(folder / "llm")
        self.tokenizer.save_pretrained(folder / "llm")
        projector = dict(self.projector.state_dict())
        if self.newline is not None:
            projector["newline"] = self.newline.data
        save_file({k: v.detach().contiguous() for k, v in projector.items()}, str(folder / "projector.safetensors"))
        record = {"vision": "vision", "llm": "llm", "projector": "projector.safetensors",
                  "vision_layer": self.vision_layer, "drop_cls": self.drop_cls, "placeholder": self.placeholder,
                  "image_norm": [list(v) for v in self.image_norm], "video_pool": self.video_pool,
                  "video_newline": self.newline is not None}
        (folder / COMPOSED_RECORD).write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def from_folder(cls, folder: Path) -> ComposedHost:
        """The host :meth:`save_pretrained` wrote."""
        record = json.loads((folder / COMPOSED_RECORD).read_text())
        host = cls(folder / record["vision"], folder / record["llm"], vision_layer=record["vision_layer"],
                   placeholder=record["placeholder"], drop_cls=record["drop_cls"],
                   projector=folder / record["projector"], video_pool=record.get("video_pool", 1),
                   video_newline=record.get("video_newline", False))
        host.image_norm = tuple(tuple(v) for v in record["image_norm"])
        return host

FAMILIES: dict[str, tuple[str, type[Host]]] = {
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", LlavaOnevisionHost),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", QwenVLHost),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", QwenVLHost),
    "internvl": ("InternVLForConditionalGeneration", InternVLHost),
}


def processor_norm(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) from a checkpoint's own processor settings, which win over the family's usual ones."""
    processor = path / "preprocessor_config.json"
    if not processor.is_file():
        return None
    settings = json.loads(processor.read_text())
    if "image_mean" in settings and "image_std" in settings:
        return tuple(settings["image_mean"]), tuple(settings["image_std"])
    return None


def load_host(path: str | Path, **from_pretrained: Any) -> Host:
    """The host for the checkpoint at ``path``: a ``save_pretrained`` folder with its tokenizer, picked by the
    ``model_type`` in its config.json, or a composed host's folder (:meth:`ComposedHost.save_pretrained`)."""
    path = Path(path)
    if (path / COMPOSED_RECORD).is_file():
        return ComposedHost.from_folder(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise LvuError(f"host checkpoint {path}: no config.json (expected a save_pretrained folder)")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in FAMILIES:
        raise LvuError(f"host checkpoint {path}: model type '{model_type}' is not a supported host family "
                       f"(supported: {', '.join(FAMILIES)}; or compose one from a vision encoder and an LLM)")
    class_name, host_class = FAMILIES[model_type]
    model = getattr(transformers, class_name).from_pretrained(str(path), **from_pretrained)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    host = host_class(model, tokenizer)
    host.image_norm = processor_norm(path) or host.image_norm
    return host


def host_class_of(path: Path) -> type[Host]:
    """The host class a checkpoint folder loads as, read from its files (no weights loaded)."""
    if (path / COMPOSED_RECORD).is_file():
        return ComposedHost
    if not (path / "config.json").is_file():
        raise LvuError(f"host checkpoint {path}: no config.json (expected a save_pretrained folder)")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type not in FAMILIES:
        raise LvuError(f"host checkpoint {path}: model type '{model_type}' is not a supported host family")
    return FAMILIES[model_type][1]
