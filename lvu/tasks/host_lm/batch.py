"""Shards to batches for host-LM tasks: decoded videos, images and text-only samples, with their conversations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lvu.data.datamodule import ShardDataModule
from lvu.data.decoders import VideoDecoder
from lvu.data.sampling import SamplerConfig
from lvu.schema import Benchmark
from lvu.tasks.host_lm.config import HostLMRecipe, SampleKind, Target
from lvu.tasks.host_lm.conversation import Conversation, Turn, conversation_of, question_of
from lvu.tasks.host_lm.evaluation import BenchmarkSample, Unanswered, benchmark_items


@dataclass
class MediaBatch:
    """A batch of samples of any kind, frames padded to the longest video.

    Lightning moves the tensors to the device (it handles dataclasses); the rest rides along.
    """

    keys: list[str]
    kinds: list[str]  # "video", "image" or "text" per sample
    frames: torch.Tensor  # [B, T, H, W, 3] uint8; an image is one frame, a text-only sample none
    frame_mask: torch.Tensor  # [B, T] bool
    timestamps: torch.Tensor  # [B, T] float seconds of each sampled frame
    durations: torch.Tensor  # [B] float seconds of each video
    conversations: list[Conversation]  # training: every turn; prediction: up to the question asked
    captions: list[str | None]  # each sample's caption, when its json has one
    pad: torch.Tensor  # [B] bool: evaluation padding copies (no loss, no prediction)
    shots: torch.Tensor | None = None  # [B, T] long: each frame's shot number (data.shots on), -1 on padding
    benchmark: list[BenchmarkSample] | None = None  # lvu eval: each sample's benchmark questions

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def is_video(self) -> torch.Tensor:
        return torch.tensor([k == "video" for k in self.kinds], device=self.frames.device)

    @property
    def is_image(self) -> torch.Tensor:
        return torch.tensor([k == "image" for k in self.kinds], device=self.frames.device)


def repeat_sample(batch: MediaBatch, b: int, conversations: list[Conversation]) -> MediaBatch:
    """Sample ``b`` of ``batch`` once per conversation (its frames shared, not copied): one video asked several
    questions."""
    n = len(conversations)

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t[b:b + 1].expand(n, *t.shape[1:])

    return MediaBatch(keys=[batch.keys[b]] * n, kinds=[batch.kinds[b]] * n, frames=rows(batch.frames),
                      frame_mask=rows(batch.frame_mask), timestamps=rows(batch.timestamps),
                      durations=rows(batch.durations), conversations=conversations,
                      captions=[batch.captions[b]] * n, pad=rows(batch.pad),
                      shots=rows(batch.shots) if batch.shots is not None else None)


def sample_kind(sample: dict[str, Any]) -> str:
    return "text" if sample.get("is_text") else "image" if sample.get("is_image") else "video"


def collate(samples: list[dict[str, Any]], conversations: list[Conversation]) -> MediaBatch:
    longest = max(len(s["frames"]) for s in samples)
    first = samples[0]["frames"]
    frames = torch.zeros((len(samples), longest, *first.shape[1:]), dtype=first.dtype)
    mask = torch.zeros((len(samples), longest), dtype=torch.bool)
    times = torch.zeros((len(samples), longest), dtype=torch.float32)
    for i, s in enumerate(samples):
        n = len(s["frames"])
        frames[i, :n] = s["frames"]
        mask[i, :n] = True
        times[i, :n] = torch.as_tensor(s["timestamps"][:n], dtype=torch.float32)
    return MediaBatch(
        keys=[s["__key__"] for s in samples], kinds=[sample_kind(s) for s in samples], frames=frames,
        frame_mask=mask, timestamps=times,
        durations=torch.tensor([float(s.get("duration_s") or 0.0) for s in samples]),
        conversations=conversations, captions=[s["annotation"].get("caption") for s in samples],
        pad=torch.tensor([bool(s.get("__pad__", False)) for s in samples]), shots=_shots(samples, longest))


def _shots(samples: list[dict[str, Any]], longest: int) -> torch.Tensor | None:
    """``[B, T]`` shot number of each frame when the decoder found shots (images and text: one shot, 0)."""
    if not any("shots" in s for s in samples):
        return None
    shots = torch.full((len(samples), longest), -1, dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["frames"])
        shots[i, :n] = torch.as_tensor(s["shots"][:n], dtype=torch.long) if "shots" in s else 0
    return shots


class Collate:
    """Training/evaluation collate (picklable for loader workers): each sample's training conversation."""

    def __init__(self, caption: bool, caption_prompt: str, caption_prompts: Sequence[str] = ()) -> None:
        self.caption, self.caption_prompt, self.caption_prompts = caption, caption_prompt, tuple(caption_prompts)

    def __call__(self, samples: list[dict[str, Any]]) -> MediaBatch:
        return collate(samples, [conversation_of(s, caption=self.caption, caption_prompt=self.caption_prompt,
                                                 caption_prompts=self.caption_prompts) for s in samples])


class CollateQuestions:
    """Prediction collate: each sample's question (a caption-only sample is asked prompt.caption_prompt)."""

    def __init__(self, caption_prompt: str) -> None:
        self.caption_prompt = caption_prompt

    def __call__(self, samples: list[dict[str, Any]]) -> MediaBatch:
        return collate(samples, [question_of(s, caption_prompt=self.caption_prompt) for s in samples])


class CollateBenchmark:
    """Evaluation collate (``lvu eval``): each sample's benchmark questions (the prompts are made per question at
    answer time, once the sampled frames' times are known)."""

    def __init__(self, grounding: bool) -> None:
        self.grounding = grounding

    def __call__(self, samples: list[dict[str, Any]]) -> MediaBatch:
        batch = collate(samples, [Conversation([Turn("user", "")]) for _ in samples])
        batch.benchmark = [BenchmarkSample(benchmark_items(s["__key__"], s["annotation"], self.grounding),
                                           s["annotation"].get("subtitles")) for s in samples]
        return batch


def video_decoder(cfg: HostLMRecipe, split: str) -> VideoDecoder:
    """Videos sampled as the recipe says (evaluation: ``data.eval_frames`` uniform frames; ``lvu eval``: from a
    question's window when its benchmark gives one), images as one frame, text-only samples as none; kinds the stage
    does not take are skipped and counted (prediction takes all)."""
    data = cfg.data
    sampler = data.sampler if split == "train" else SamplerConfig(num_frames=data.eval_frames, allow_repeats=True)
    kinds = {SampleKind(k) for k in data.kinds} if split != "predict" else set(SampleKind)
    return VideoDecoder(sampler, size=(data.frame_size, data.frame_size), allow_images=SampleKind.image in kinds,
                        allow_text=SampleKind.text in kinds, allow_videos=SampleKind.video in kinds, shots=data.shots,
                        windows=split == "predict" and cfg.eval.benchmark is not None)


def host_lm_data(cfg: HostLMRecipe) -> ShardDataModule:
    """The DataModule of a host-LM recipe. With a benchmark (``lvu eval``), prediction asks each video's benchmark
    questions, over the videos that still have unanswered ones in ``<run_dir>/answers``."""
    train = Collate(cfg.data.target == Target.caption, cfg.prompt.caption_prompt, cfg.prompt.caption_prompts)
    benchmark = cfg.eval.benchmark
    grounding = benchmark == Benchmark.ego4d_nlq
    ask = CollateBenchmark(grounding) if benchmark is not None else CollateQuestions(cfg.prompt.caption_prompt)
    unanswered = Unanswered(answers_folder(cfg.run_dir), grounding) if benchmark and cfg.run_dir else None
    return ShardDataModule(cfg.data, cfg.seed, decode=lambda split: video_decoder(cfg, split),
                           collate=lambda split: ask if split == "predict" else train,
                           select=lambda split: unanswered if split == "predict" else None)


def answers_folder(run_dir: str | Path) -> Path:
    return Path(run_dir) / "answers"
