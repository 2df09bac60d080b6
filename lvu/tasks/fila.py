"""FiLA-Video on the host-LM layer (Guo et al.): a LLaVA-OneVision-style host whose video frames are grouped into
scenes and each scene merged into one frame of tokens (lvu.models.fila), trained in four stages (Table 4).

Stages are recipes of this one task (``recipes/fila/stage1..4.yaml``): stages 1-3 train the host on images (the
merge module exists but stays frozen), stage 4 adds the merge and trains on videos: 96 uniform frames, every 3
consecutive frames one scene, merged to 32 (no scene selection in training, Sec. 3.4). In evaluation and prediction
the scenes come from K-means scene selection among the candidates (Sec. 3.1; ``scenes.eval=selection``), or are the
training's consecutive groups, or every frame is its own (FiLA-Base, ``base``: the host's own video path).

Choices the paper leaves open are options with their defaults below (OPEN), each saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import nn

from lvu.errors import ConfigError
from lvu.models.fila import (
    MergeConfig,
    MergeKind,
    SceneSelectionConfig,
    Selection,
    ShortHistory,
    Supplements,
    build_merge,
    select_scenes,
)
from lvu.tasks.host_lm import (
    HostLMRecipe,
    HostLMTask,
    TextInput,
    VideoInput,
    VideoTokens,
    export_host_lm,
    host_lm_data,
    host_lm_metrics,
)
from lvu.tasks.registry import TaskSpec, register_task


class MergePosition(str, Enum):
    """Where in the host's per-frame pipeline scenes are merged (OPEN: the paper says only "patch tokens")."""

    before_projector = "before_projector"  # the vision encoder's features (a k x N x D_vision weight)
    after_projector = "after_projector"  # the projected patch tokens, before the video path's 2x2 pooling
    after_pooling = "after_pooling"  # the pooled tokens the LLM reads (the smallest weight)


class SceneMode(str, Enum):
    """How a video's frames become scenes."""

    consecutive = "consecutive"  # every k consecutive frames (stage-4 training, Sec. 3.4)
    selection = "selection"  # K-means scene selection (Sec. 3.1; inference)
    base = "base"  # no scenes: every frame as the host's own video path takes it (FiLA-Base)


@dataclass
class FiLAModelConfig:
    """The merge module (Sec. 3.2; Table 3's rivals)."""

    frames_per_scene: int = 3
    """Frames merged into one (Sec. 4.1: 96 frames, every 3 one scene, merged to 32)."""
    merge: MergeKind = MergeKind.weighted_fusion
    """weighted_fusion (the paper's), attention_pooling, temporal_average, bsm or uniform (no merge: the middle
    frame), Table 3."""
    bsm_weighted: bool = True
    """bsm: merged tokens are size-weighted means (ToMe, LongVLM); false sums them as the paper's pseudocode does."""
    position: MergePosition = MergePosition.after_projector
    """Where frames are merged (OPEN): after the projector, on the patch tokens (Eq. 7's N patches) in the LLM's
    space, before the 2x2 pooling that only the video path applies; before_projector and after_pooling are the
    alternatives."""


@dataclass
class ScenesSection:
    """How frames become scenes, in training and in evaluation/prediction."""

    train: SceneMode = SceneMode.consecutive
    """Scenes while training: consecutive (stage 4), or base (FiLA-Base: no merge)."""
    eval: SceneMode = SceneMode.selection
    """Scenes in validation, test and prediction: selection (FiLA-Video), consecutive, or base (FiLA-Base)."""
    scenes: int = 32
    """Scenes kept by selection (k; Sec. 4.1: 32 from 96 candidates)."""
    selection: Selection = Selection.clustering
    """clustering (Sec. 3.1) or uniform (Table 2's uniform sampling of the same number of frames)."""
    supplement: Supplements = Supplements.similar
    """similar (the paper's choice) or dissimilar historical frames complete each scene (Table 2)."""
    clusters: int | None = None
    """K-means clusters (OPEN); null = scenes. More clusters than scenes keeps the largest."""
    iterations: int = 50
    """K-means iteration cap (OPEN)."""
    tolerance: float = 1e-4
    """K-means stops once no centre moves more than this, relative to the features' mean norm."""
    restarts: int = 10
    """K-means random starts, the tightest kept (OPEN: one start can settle with two centres in one scene)."""
    seed: int = 0
    """Seed of K-means' random starts (the same video always selects the same scenes)."""
    short_history: ShortHistory = ShortHistory.repeat
    """A representative with fewer historical frames than needed (OPEN): repeat it, or extend past it."""


@dataclass
class FiLARecipe(HostLMRecipe):
    model: FiLAModelConfig = field(default_factory=FiLAModelConfig)
    """The merge module."""
    scenes: ScenesSection = field(default_factory=ScenesSection)
    """Scenes in training and evaluation."""


class FiLATask(HostLMTask):
    """FiLA-Video (see the module docstring)."""

    def build_method(self) -> dict[str, nn.Module | nn.Parameter]:
        m = self.cfg.model
        if m.frames_per_scene < 1:
            raise ConfigError(f"model.frames_per_scene must be at least 1, got {m.frames_per_scene}")
        with torch.no_grad():
            blank = torch.zeros(1, self.cfg.data.frame_size, self.cfg.data.frame_size, 3, dtype=torch.uint8)
            shape = self._to_merge(self.host.normalize(blank)).shape
        return {"merge": build_merge(MergeConfig(m.merge, m.bsm_weighted), m.frames_per_scene, shape[1], shape[2])}

    @property
    def selection_config(self) -> SceneSelectionConfig:
        s, k = self.cfg.scenes, self.cfg.model.frames_per_scene
        return SceneSelectionConfig(scenes=s.scenes, supplements=k - 1, selection=s.selection, supplement=s.supplement,
                                    clusters=s.clusters, iterations=s.iterations, tolerance=s.tolerance,
                                    restarts=s.restarts, seed=s.seed, short_history=s.short_history)

    # The host's per-frame pipeline, cut where the merge sits.
    def _to_merge(self, pixels: torch.Tensor) -> torch.Tensor:
        position = MergePosition(self.cfg.model.position)
        if position == MergePosition.before_projector:
            return self.host.vision_features(pixels)
        tokens = self.host.encode_frames(pixels)
        return self.host.pool_video_frames(tokens) if position == MergePosition.after_pooling else tokens

    def _from_merge(self, merged: torch.Tensor) -> torch.Tensor:
        position = MergePosition(self.cfg.model.position)
        if position == MergePosition.before_projector:
            merged = self.host.project(merged)
        return merged if position == MergePosition.after_pooling else self.host.pool_video_frames(merged)

    def video_tokens(self, videos: VideoInput, text: TextInput | None) -> VideoTokens:
        """Every frame of the batch through the host up to the merge in one pass; scenes per video; one merge call
        for every scene of the batch; the rest of the host's video path."""
        mode = SceneMode(self.cfg.scenes.train if self.training else self.cfg.scenes.eval)
        counts = videos.frame_mask.sum(1).tolist()
        features = self._to_merge(self.host.normalize(videos.frames[videos.frame_mask]))
        times = [t[m] for t, m in zip(videos.timestamps, videos.frame_mask, strict=True)]
        if mode == SceneMode.base:
            tokens = self._from_merge(features)
            return VideoTokens(self.host.join_video_frames(tokens, counts), [t.tolist() for t in times])
        groups = self._scenes(mode, features, counts)  # per video [S_v, k] frame indices within the video
        offsets = torch.tensor([0, *counts[:-1]], device=features.device).cumsum(0)
        index = torch.cat([g + offset for g, offset in zip(groups, offsets, strict=True)])  # [S, k]
        merged = self.merge(features[index])  # [S, N, D]
        tokens = self._from_merge(merged)
        scene_counts = [len(g) for g in groups]
        scene_times = [t[g].mean(1).tolist() for t, g in zip(times, groups, strict=True)]
        return VideoTokens(self.host.join_video_frames(tokens, scene_counts), scene_times)

    def _scenes(self, mode: SceneMode, features: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        k = self.cfg.model.frames_per_scene
        device = features.device
        if mode == SceneMode.consecutive:
            # Every k consecutive frames (a video shorter than k repeats its frames; a remainder is dropped).
            return [torch.arange(max(n // k, 1) * k, device=device).clamp(max=n - 1).view(-1, k) for n in counts]
        cfg = self.selection_config
        means = [chunk.float().mean(1) for chunk in features.split(counts)]  # Eq. 1, per frame
        enough = [n >= (cfg.clusters or cfg.scenes) for n in counts]
        groups: list[torch.Tensor | None] = [None] * len(counts)
        rows = [i for i, ok in enumerate(enough) if ok]
        if rows:
            longest = max(counts[i] for i in rows)
            padded = features.new_zeros(len(rows), longest, means[rows[0]].shape[-1], dtype=torch.float32)
            valid = torch.zeros(len(rows), longest, dtype=torch.bool, device=device)
            for j, i in enumerate(rows):
                padded[j, :counts[i]] = means[i]
                valid[j, :counts[i]] = True
            chosen = select_scenes(padded, valid, cfg).frames
            for j, i in enumerate(rows):
                groups[i] = chosen[j]
        # Fewer candidates than clusters: the same number of scenes, uniformly (Table 2's uniform selection).
        uniform = SceneSelectionConfig(scenes=cfg.scenes, supplements=k - 1, selection=Selection.uniform)
        for i, ok in enumerate(enough):
            if not ok:
                groups[i] = select_scenes(means[i][None], torch.ones(1, counts[i], dtype=torch.bool,
                                                                        device=device), uniform).frames[0]
        return [g for g in groups if g is not None]


register_task(TaskSpec(
    "fila", FiLARecipe, FiLATask, host_lm_data,
    "FiLA-Video (Guo et al.): scene selection and weighted-fusion merge on a LLaVA-OneVision-style host; "
    "stages fila/stage1..4, fila/base",
    export=export_host_lm, metrics=host_lm_metrics(FiLATask)))

__all__ = ["FiLAModelConfig", "FiLARecipe", "FiLATask", "MergePosition", "SceneMode", "ScenesSection"]
