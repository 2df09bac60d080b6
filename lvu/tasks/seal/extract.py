"""``seal.extract``: video shards -> token shards of scene, object and action tokens (SEAL Sec. 3.1).

``lvu predict seal/extract data.predict=VIDEOS output.folder=TOKENS`` decodes each video's frames, extracts its
tokens (:mod:`lvu.models.seal_extract`) and writes them as token shards (:mod:`lvu.data.token_shards`). It runs on
every trainer preset (CPU, DDP, Slurm): each video is extracted by exactly one rank (every rank plans from the parts
on disk before any rank writes), and a killed or preempted run resumes by running the same command: the videos in
complete parts are skipped. The folder records the models and settings (``settings.json``); a rerun with other
ones is refused, so tokens of two extractors never mix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import MISSING

from lvu.data.datamodule import ShardDataConfig, ShardDataModule
from lvu.data.decoders import VideoDecoder
from lvu.data.sampling import SamplerConfig
from lvu.errors import ConfigError
from lvu.models.clip_encoders import ClipEncoder
from lvu.models.seal_extract import Detector, ExtractionConfig, Extractor, MaskProposer, TokenKind, VideoTokens
from lvu.schema import RecipeConfig
from lvu.tasks.seal.parts import VideoOutput, claim_folder, collate_list, done_videos, plain


@dataclass
class SealVideoConfig(ShardDataConfig):
    """Video shards and how their frames are decoded for extraction."""

    batch_size: int = 1
    """Videos per step on each rank."""
    frames: int = 256
    """OPEN: frames decoded per video, uniformly spaced (fewer when the video has fewer); the detector and tracker
    run on all of them, scene tokens and keyframes are spread over them. The paper gives no frame rate."""
    frame_size: int = 448
    """OPEN: frames are resized to frame_size x frame_size when decoded (crops come from these)."""


@dataclass
class SealModelsConfig:
    """The models, each a local folder written by ``save_pretrained`` (nothing is downloaded)."""

    encoder: str = MISSING
    """Frame and crop encoder: CLIP or SigLIP (its text tower embeds the queries for relevance)."""
    sam2: str | None = None
    """SAM2 model (transformers ``Sam2Model``): required for object tokens."""
    detector: str | None = None
    """Object detector (transformers ``AutoModelForObjectDetection``): required for action tokens."""
    dtype: str = "float32"
    """Precision the models run in (float32, bfloat16, float16)."""


STORE_DTYPES = ("float16", "float32")


@dataclass
class TokenOutputConfig:
    """Where and how the token shards are written."""

    folder: str = MISSING
    """The token shards' folder; running the same command again resumes into it."""
    part_videos: int = 16
    """Videos per part (a kill loses at most the part being filled on each rank)."""
    dtype: str = "float16"
    """Stored embedding precision: float16 halves the disk of float32 (the selection computes in float32)."""


@dataclass
class SealExtractRecipe(RecipeConfig):
    data: SealVideoConfig = field(default_factory=SealVideoConfig)
    """Video shards (``data.predict``)."""
    models: SealModelsConfig = field(default_factory=SealModelsConfig)
    """Encoder, SAM2 and detector folders."""
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    """What is extracted (supplement values; OPEN choices marked)."""
    output: TokenOutputConfig = field(default_factory=TokenOutputConfig)
    """The token shards."""


def _kinds(cfg: SealExtractRecipe) -> list[TokenKind]:
    return [TokenKind(k) for k in cfg.extraction.kinds]


def check_extract(cfg: SealExtractRecipe) -> None:
    """Every mismatch between the kinds asked for and the models given, in one error."""
    problems = []
    if TokenKind.object in _kinds(cfg) and not cfg.models.sam2:
        problems.append("object tokens need models.sam2 (a SAM2 folder), or drop 'object' from extraction.kinds")
    if TokenKind.action in _kinds(cfg) and not cfg.models.detector:
        problems.append("action tokens need models.detector (an object-detection folder), or drop 'action' from "
                        "extraction.kinds")
    if cfg.output.dtype not in STORE_DTYPES:
        problems.append(f"output.dtype must be one of {', '.join(STORE_DTYPES)}, got {cfg.output.dtype!r}")
    if not _kinds(cfg):
        problems.append("extraction.kinds is empty")
    counts = {"data.frames": cfg.data.frames, "output.part_videos": cfg.output.part_videos,
              "extraction.scene_frames": cfg.extraction.scene_frames, "extraction.keyframes": cfg.extraction.keyframes,
              "extraction.action_crop_frames": cfg.extraction.action_crop_frames}
    problems += [f"{name} must be at least 1, got {value}" for name, value in counts.items() if value < 1]
    if problems:
        raise ConfigError("seal.extract:\n  - " + "\n  - ".join(problems))


# Settings that change memory use only (each model call's batch): a run resumed with others (e.g. after running out
# of GPU memory) makes the same tokens up to float rounding, so they are not part of the folder's identity.
MEMORY_ONLY = (("encode_batch",), ("detection", "batch_frames"), ("masks", "points_per_batch"))


def extraction_identity(cfg: SealExtractRecipe) -> dict[str, Any]:
    """What decides the tokens: a folder holds tokens of one identity only. Model folders are recorded resolved
    (the same folder named relatively or absolutely is one)."""
    extraction = plain(cfg.extraction)
    for *section, name in MEMORY_ONLY:
        holder = extraction
        for part in section:
            holder = holder[part]
        holder.pop(name)
    models = {k: (str(Path(v).resolve()) if v and k != "dtype" else v) for k, v in asdict(cfg.models).items()}
    return {"models": models, "extraction": extraction, "frames": cfg.data.frames,
            "frame_size": cfg.data.frame_size, "dtype": cfg.output.dtype}


class SealExtractTask(L.LightningModule):
    """Frozen models, no parameters to train: prediction only. The models are loaded when prediction starts, on the
    rank's device."""

    def __init__(self, cfg: SealExtractRecipe) -> None:
        super().__init__()
        check_extract(cfg)
        self.cfg = cfg
        self.extractor: Extractor | None = None
        sources = [cfg.models.encoder, cfg.models.sam2, cfg.models.detector]
        self.weights_source = ", ".join(s for s in sources if s)

    def on_predict_start(self) -> None:
        models, dtype = self.cfg.models, getattr(torch, self.cfg.models.dtype)
        encoder = ClipEncoder.from_pretrained(models.encoder, device=str(self.device), dtype=models.dtype)
        kinds = _kinds(self.cfg)
        masks = MaskProposer.from_pretrained(models.sam2, self.cfg.extraction.masks, self.device, dtype) \
            if TokenKind.object in kinds and models.sam2 else None
        detector = Detector.from_pretrained(models.detector, self.cfg.extraction.detection, self.device, dtype) \
            if TokenKind.action in kinds and models.detector else None
        self.extractor = Extractor(self.cfg.extraction, encoder, masks, detector)

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> list[VideoOutput]:
        assert self.extractor is not None
        out = []
        for sample in batch:
            if sample["__pad__"]:
                continue  # a padding copy of a video another slot extracts
            frames, times = distinct_frames(sample["frames"], torch.as_tensor(sample["timestamps"]))
            tokens = self.extractor.extract(frames, times, float(sample["duration_s"]))
            out.append(token_sample(sample["__key__"], tokens, sample, self.cfg.output.dtype))
        return out


def distinct_frames(frames: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames without the repeats uniform sampling makes when a video has fewer frames than asked for (a
    repeated frame would look like a still object to the tracker)."""
    keep = torch.ones(len(times), dtype=torch.bool)
    keep[1:] = times[1:] != times[:-1]
    return frames[keep], times[keep].double()


def token_sample(key: str, tokens: VideoTokens, sample: dict[str, Any], dtype: str) -> VideoOutput:
    """One video's token sample: embeddings ``.npy`` and its tokens' records with the video's annotation ``.json``."""
    annotation = {k: v for k, v in sample["annotation"].items() if k != "tokens"}
    payload = {**annotation, "tokens": [t.record() for t in tokens.tokens], "duration_s": float(sample["duration_s"]),
               "counts": tokens.counts()}
    return VideoOutput(key, [(key, {"npy": tokens.embeddings.numpy().astype(dtype), "json": payload})])


def _collate(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return samples


def seal_extract_data(cfg: SealExtractRecipe) -> ShardDataModule:
    """Video shards, each video decoded to ``data.frames`` uniform frames, over the videos not yet in the output
    folder (its complete parts and failure lists)."""
    folder = claim_folder(Path(cfg.output.folder), extraction_identity(cfg), "tokens")
    done = done_videos(folder, "features", extraction_identity(cfg))
    if done:
        rank_zero_info(f"{folder}: {len(done)} video(s) already extracted or recorded as unreadable; skipped")
    sampler = SamplerConfig(num_frames=cfg.data.frames, allow_repeats=True)
    decoder = VideoDecoder(sampler, size=(cfg.data.frame_size, cfg.data.frame_size), allow_images=False)
    return ShardDataModule(cfg.data, cfg.seed, decode=lambda split: decoder, collate=lambda split: collate_list,
                           select=lambda split: (lambda annotation: annotation["__key__"] not in done)
                           if split == "predict" else None, empty_ok=("predict",))


