"""The no-method baseline: uniformly sampled frames through the host's own video path (the "uniform" / FiLA-Base rows
of FiLA-Video's tables), trainable with the same per-part options as every video method, so that each method has a
like-for-like baseline on the same host, data and budget.

LLaVA-OneVision's video path pools each frame's patch grid 2x2 and ends the video with its newline token (as
transformers' ``get_video_features``); the other families take each frame's image tokens in time order.
"""

from __future__ import annotations

from lvu.tasks.host_lm import HostLMRecipe, HostLMTask, export_host_lm, host_lm_data, host_lm_metrics
from lvu.tasks.registry import TaskSpec, register_task

register_task(TaskSpec(
    "uniform", HostLMRecipe, HostLMTask, host_lm_data,
    "baseline: uniform frames through the host's own video path (FiLA-Base), any parts frozen, full or LoRA",
    export=export_host_lm, metrics=host_lm_metrics(HostLMTask)))
