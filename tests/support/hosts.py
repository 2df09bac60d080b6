"""Tiny random hosts for the tests (built by lvu.models.vlm.tiny) and the families' native image forward."""

from __future__ import annotations

import torch

from lvu.models.vlm.tiny import FRAME, WIDTH  # noqa: F401  (re-exported for the tests)
from lvu.models.vlm.tiny import save_tiny_host as save_host  # noqa: F401
from lvu.models.vlm.tiny import save_tiny_parts as save_parts  # noqa: F401


def native_image_logits(host, ids, mask, pixels):
    """The family model's own forward on ``ids`` with one normalised image per sample ``pixels [B, 3, H, W]``."""
    if host.family == "qwen_vl":
        flat, grid = host.patchify(pixels)
        return host.model(input_ids=ids, attention_mask=mask, pixel_values=flat, image_grid_thw=grid,
                          mm_token_type_ids=(ids == host.placeholder_id).int()).logits
    if host.family == "llava_onevision":  # AnyRes: the base view and one tile of the same pixels
        return host.model(input_ids=ids, attention_mask=mask, pixel_values=pixels[:, None].repeat(1, 2, 1, 1, 1),
                          image_sizes=torch.tensor([list(pixels.shape[2:])] * len(pixels))).logits
    return host.model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
