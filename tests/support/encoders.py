"""Tiny random encoders of each supported family, saved like real checkpoints (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=64,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)


def save_tiny_encoder(family: str, path: Path) -> Path:
    from transformers import (
        CLIPConfig,
        CLIPModel,
        SiglipConfig,
        SiglipModel,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
        VideoMAEConfig,
        VideoMAEModel,
        VJEPA2Config,
        VJEPA2Model,
        XCLIPConfig,
        XCLIPModel,
    )

    torch.manual_seed(0)
    if family == "clip":
        model = CLIPModel(CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=24))
    elif family == "siglip":
        model = SiglipModel(SiglipConfig(vision_config=VISION, text_config=TEXT))
    elif family == "xclip":
        vision = dict(VISION, num_frames=4, mit_hidden_size=24, mit_intermediate_size=48, mit_num_hidden_layers=1,
                      mit_num_attention_heads=4)
        model = XCLIPModel(XCLIPConfig(vision_config=vision, text_config=TEXT, projection_dim=24, prompt_layers=1,
                                       prompt_attention_heads=4, prompt_num_attention_heads=4))
    elif family == "videomae":
        model = VideoMAEModel(VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2,
                                             hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4))
    elif family == "vjepa2":
        model = VJEPA2Model(VJEPA2Config(crop_size=32, patch_size=8, frames_per_clip=4, tubelet_size=2,
                                         hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2.0,
                                         pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=4))
    elif family == "video_llava":
        text = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
        model = VideoLlavaForConditionalGeneration(VideoLlavaConfig(
            vision_config=dict(VISION, model_type="clip_vision_model", projection_dim=24), text_config=text,
            image_token_index=100, video_token_index=101))
    else:
        raise ValueError(family)
    model.save_pretrained(path)
    return path
