"""LinVT training stages (Gao et al., Sec. 3.3). Stage 1, ``linvt.align``: the host (vision encoder, projector, LLM)
is frozen and only LinVT trains, on video-caption pairs, with the caption's next-token loss plus a contrastive loss
between pooled video tokens and caption text embeddings (negatives gathered across ranks).

The paper gives neither the contrastive loss's pooling nor its temperature (OPEN): video tokens and caption token
embeddings are mean-pooled and compared with a symmetric InfoNCE whose temperature is learnt from 0.07 (CLIP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from lvu.data.datamodule import ShardDataConfig, ShardDataModule
from lvu.data.decoders import VideoDecoder
from lvu.data.sampling import SamplerConfig, SamplerName
from lvu.errors import LvuError
from lvu.models.linvt import LinVT, LinVTConfig, Variant
from lvu.models.vlm import load_host
from lvu.schema import RecipeConfig
from lvu.tasks.optim import configure_optimizers
from lvu.tasks.registry import TaskSpec, register_task

ALIGN_INSTRUCTION = "Describe the video."


@dataclass
class LinVTDataConfig(ShardDataConfig):
    """Video shards with captions. Training samples a random frame count (paper: OPEN; the official code uses
    40-120 frames), evaluation a fixed one."""

    frame_size: int = 384  # frames are resized to this square size (the host encoder's input size)
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(
        name=SamplerName.random_interval, min_frames=40, max_frames=120))
    eval_frames: int = 64
    max_caption_tokens: int = 256


@dataclass
class HostSection:
    path: str = MISSING  # a save_pretrained folder of a supported host (lvu.models.vlm.FAMILIES)


@dataclass
class LinVTModelConfig:
    """LinVT's hyper-parameters (lvu.models.linvt.LinVTConfig; dim comes from the host)."""

    layers: int = 4
    heads: int = 8
    top_k: int = 2048
    queries: list[int] = field(default_factory=lambda: [64, 32, 16])
    variant: Variant = Variant.multi_c
    text_conditioning: bool = True
    mlp_ratio: float = 4.0
    width: int | None = None


def linvt_config(m: LinVTModelConfig, dim: int) -> LinVTConfig:
    return LinVTConfig(dim=dim, layers=m.layers, heads=m.heads, top_k=m.top_k, queries=list(m.queries),
                       variant=m.variant, text_conditioning=m.text_conditioning, mlp_ratio=m.mlp_ratio, width=m.width)


def load_linvt_weights(linvt: LinVT, state: dict[str, torch.Tensor], source: str) -> None:
    """Load the ``linvt.*`` tensors of a task state dict into ``linvt``, all of them, or say what does not fit."""
    weights = {k.removeprefix("linvt."): v for k, v in state.items() if k.startswith("linvt.")}
    missing, unexpected = linvt.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise LvuError(f"{source} does not fit this LinVT (missing {missing[:3]}, unexpected {unexpected[:3]}); use "
                       f"the model settings it was trained with")


def lora_config(lora: LoraSection) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.targets))


@dataclass
class LossConfig:
    contrastive_weight: float = 1.0
    temperature: float = 0.07  # initial value; learnt


@dataclass
class GenerationSection:
    """Decoding for ``lvu predict`` (greedy)."""

    max_new_tokens: int = 64


@dataclass
class LinVTAlignRecipe(RecipeConfig):
    data: LinVTDataConfig = field(default_factory=LinVTDataConfig)
    host: HostSection = field(default_factory=HostSection)
    model: LinVTModelConfig = field(default_factory=LinVTModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    generation: GenerationSection = field(default_factory=GenerationSection)


def collate_videos(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad frames to the longest video of the batch: ``frames [B, T, H, W, 3]`` uint8 and ``frame_mask [B, T]``,
    with the captions."""
    return {**_frames_only(samples), "captions": [_caption(s) for s in samples]}


def _caption(sample: dict[str, Any]) -> str:
    caption = sample["annotation"].get("caption")
    if not caption:
        raise LvuError(f"sample {sample['__key__']}: no caption in its json (the alignment stage needs one)")
    return caption


def _zero_stage(strategy: Any) -> int | None:
    config = getattr(strategy, "config", None)
    return (config or {}).get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None


@dataclass
class VisualTokens:
    per_sample: list[torch.Tensor]  # [K_b, D] per sample, in batch order
    videos: torch.Tensor  # [V, M, D] LinVT tokens of the batch's videos
    is_video: torch.Tensor  # [B] bool
    anchor: torch.Tensor  # a zero that ties LinVT into the graph when the batch has no video


class LinVTAlign(L.LightningModule):
    lora_config = None  # stage 2 sets peft's LoraConfig
    weights_source: str | None = None  # where trained weights came from at build time (an export), if anywhere

    def __init__(self, cfg: LinVTAlignRecipe) -> None:
        super().__init__()
        self.cfg = cfg
        self.host = load_host(cfg.host.path)
        self.host.requires_grad_(False)
        self.linvt = LinVT(linvt_config(cfg.model, self.host.hidden_size))
        # Checkpoints hold only what trains (the frozen host is rebuilt from host.path): a module load must not ask
        # for the host's weights. `lvu fit --ckpt` compatibility is checked before loading (lvu.train.compat).
        self.strict_loading = False
        # Shape [1], not a scalar: DeepSpeed cannot broadcast 0-dim parameters.
        self.log_scale = nn.Parameter(torch.tensor([math.log(1 / cfg.loss.temperature)]))

    # The host is frozen and stays in eval mode (no dropout), also while LinVT trains.
    def train(self, mode: bool = True):
        super().train(mode)
        self.host.eval()
        for name, module in self.host.named_modules():  # stage 2's LoRA dropout does train (its own p = 0.05)
            if "lora_dropout" in name:
                module.train(mode)
        return self

    @property
    def checkpoint_excludes(self) -> tuple[str, ...]:
        return ("host.",)  # restored from host.path, never saved

    # Saved: LinVT (and stage 2's LoRA adapters on the host); the frozen host weights come from host.path.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith("host.") or "lora_" in k}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:  # DeepSpeed restores the module itself and passes no state_dict
            own = {f"host.{k}": v for k, v in self.host.state_dict().items() if "lora_" not in k}
            checkpoint["state_dict"] = {**own, **checkpoint["state_dict"]}

    # -- model pieces -----------------------------------------------------------------------------------------------

    def _tokenize(self, texts: list[str], max_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.host.tokenizer
        enc = tok(texts, add_special_tokens=False, padding=True, truncation=max_tokens is not None,
                  max_length=max_tokens, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device).bool()

    def visual_tokens(self, batch: dict[str, Any], instructions: list[str]) -> VisualTokens:
        """Each sample's visual tokens for its prompt: a video's LinVT tokens, an image's tokens exactly as the host
        encodes images (LinVT is for videos; the host's image ability is kept), nothing for a text-only sample.

        Every step runs the same modules on every rank, whatever the mix of the local batch (ZeRO-3 gathers each
        module's weights collectively and hangs if one rank skips a module): the frame encoder, the image encoder
        and LinVT each see a blank stand-in when the batch has nothing for them, and LinVT's stand-in output joins
        the loss times zero so its backward runs too.
        """
        frames, frame_mask, kinds = batch["frames"], batch["frame_mask"], batch["kinds"]
        is_video = torch.tensor([k == "video" for k in kinds], device=frames.device)
        is_image = torch.tensor([k == "image" for k in kinds], device=frames.device)
        video_mask = frame_mask & is_video[:, None]
        blank = frames.new_zeros(1, *frames.shape[2:])
        with torch.no_grad():
            video_frames = frames[video_mask] if bool(video_mask.any()) else blank
            per_frame = self.host.encode_frames(self.host.normalize(video_frames))
            images = frames[is_image, 0] if bool(is_image.any()) else blank
            image_tokens = self.host.encode_images(self.host.normalize(images))
            ids, mask = self._tokenize(instructions)
            text = self.host.embed_text(ids)
        if bool(is_video.any()):
            grid = per_frame.new_zeros(*video_mask.shape, *per_frame.shape[1:])
            grid[video_mask] = per_frame
            rows = is_video.nonzero().squeeze(1)
            out = self.linvt(grid[rows], frame_mask[rows], text[rows], mask[rows]).tokens
            anchor = out.new_zeros(())
        else:
            out = self.linvt(per_frame[:1, None], frame_mask.new_ones(1, 1), text[:1], mask[:1]).tokens
            anchor, out = out.sum() * 0.0, out[:0]
        per_sample, videos, images_left = [], iter(out), iter(image_tokens)
        empty = out.new_zeros(0, out.shape[-1])
        for kind in kinds:
            per_sample.append(next(videos) if kind == "video" else next(images_left) if kind == "image" else empty)
        return VisualTokens(per_sample, out, is_video, anchor)

    def _prompts(self, batch: dict[str, Any], visual: list[torch.Tensor], questions: list[str],
                 answers: list[str]):
        """Chat-template prompts (a sample's visual tokens, then its question) with the answers appended,
        left-padded; labels cover the answers only. Also each sample's image sizes (for 2-D image positions)."""
        tok = self.host.tokenizer
        rows, labels = [], []
        pads = batch["pad"].tolist() if "pad" in batch else [False] * len(questions)
        for tokens, question, answer, pad in zip(visual, questions, answers, pads, strict=True):
            marks = self.host.visual_prompt(len(tokens))
            content = f"{marks}{self.host.visual_separator}{question}" if marks else question
            prompt = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            a = tok(answer + (tok.eos_token or ""), add_special_tokens=False, truncation=True,
                    max_length=self.cfg.data.max_caption_tokens)["input_ids"] if answer is not None else []
            rows.append(p + a)
            labels.append([-100] * len(p) + ([-100] * len(a) if pad else a))  # evaluation padding copies: no loss
        length = max(map(len, rows))
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows], device=self.device)
        lab = torch.tensor([[-100] * (length - len(r)) + r for r in labels], device=self.device)
        size = tuple(batch["frames"].shape[2:4])
        image_sizes = [[size] if kind == "image" else [] for kind in batch["kinds"]]
        return ids, mask, lab, image_sizes

    def _llm_inputs(self, batch: dict[str, Any], questions: list[str], answers: list[str | None]):
        """(visual tokens, inputs_embeds, attention mask, labels, position ids) of the batch's prompts."""
        visual = self.visual_tokens(batch, questions)
        ids, mask, labels, image_sizes = self._prompts(batch, visual.per_sample, questions, answers)
        # The anchor (zero) makes the LLM's input need a gradient on every rank, as LinVT tokens make it on a rank
        # with videos: backward then visits the same modules everywhere (ZeRO-3 gathers frozen ones there too).
        embeds = self.host.build_inputs_embeds(ids, visual.per_sample) + visual.anchor
        return visual, embeds, mask, labels, self.host.position_ids(ids, mask, image_sizes)

    def answer(self, batch: dict[str, Any], questions: list[str], answers: list[str]) -> tuple[VisualTokens, Any]:
        """(visual tokens, the host LLM's output with the next-token loss on the answers)."""
        visual, embeds, mask, labels, positions = self._llm_inputs(batch, questions, answers)
        return visual, self.host(embeds, mask, labels, positions)

    def _losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(training loss, its parts to log)."""
        captions = batch["captions"]
        visual, out = self.answer(batch, [ALIGN_INSTRUCTION] * len(captions), captions)
        caption = out.loss
        contrastive = self._contrastive(visual, captions, ~batch["pad"].to(visual.is_video.device))
        loss = caption + self.cfg.loss.contrastive_weight * contrastive
        return loss, {"caption_loss": caption, "contrastive_loss": contrastive}

    def _contrastive(self, visual: VisualTokens, captions: list[str], real: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE between each video's pooled tokens and its caption, against every video and caption
        of the global batch. Rows of every rank are padded to the local batch size (equal on all ranks) so the
        gather never sees ragged shapes; evaluation padding copies (``real`` False) and non-video samples are
        masked out, and a rank left with none still joins the gathers' backward with a zero loss."""
        ids, mask = self._tokenize(captions, self.cfg.data.max_caption_tokens)
        with torch.no_grad():
            words = self.host.embed_text(ids)
        text = (words * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        v = visual.videos.new_zeros(len(captions), visual.videos.shape[-1])
        v = v.index_put((visual.is_video.nonzero().squeeze(1),), visual.videos.mean(1))
        v, t = F.normalize(v, dim=-1), F.normalize(text.to(v.dtype), dim=-1)
        used = visual.is_video & real
        all_v, all_t = self._gather(v), self._gather(t)
        ok = self._gather(used.to(v.dtype)) > 0.5
        offset = self.global_rank * v.shape[0] if self.trainer.world_size > 1 else 0
        rows = used.nonzero().squeeze(1)
        scale = self.log_scale.exp().clamp(max=100)
        if rows.numel() == 0:  # no video here: still a (zero) loss through the gathers, whose backward is collective
            return (all_v.sum() + scale.sum()) * 0.0
        blocked = ~ok[None]
        v_to_t = (scale * v[rows] @ all_t.T).masked_fill(blocked, float("-inf"))
        t_to_v = (scale * t[rows] @ all_v.T).masked_fill(blocked, float("-inf"))
        return 0.5 * (F.cross_entropy(v_to_t, rows + offset) + F.cross_entropy(t_to_v, rows + offset))

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size == 1:
            return x
        return self.all_gather(x, sync_grads=True).flatten(0, 1)  # negatives from every rank

    # -- steps --------------------------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, parts = self._losses(batch)
        self.log_dict({f"train/{k}": v for k, v in {"loss": loss, **parts}.items()}, prog_bar=True,
                      batch_size=len(batch["keys"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, parts = self._losses(batch)
        self.log_dict({f"val/{k}": v for k, v in {"loss": loss, **parts}.items()}, sync_dist=True,
                      batch_size=len(batch["keys"]))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Greedy answers to each sample's question (padding copies of the last batch are left out)."""
        questions = batch["questions"]
        _, embeds, mask, _, positions = self._llm_inputs(batch, questions, [None] * len(questions))
        # ZeRO-3 gathers weights collectively at every forward: ranks must decode in lockstep even when one rank's
        # answers end early (transformers' synced_gpus keeps every rank stepping until all are done).
        synced = self.trainer.world_size > 1 and _zero_stage(self.trainer.strategy) == 3
        new = self.host.generate(embeds, mask, max_new_tokens=self.cfg.generation.max_new_tokens,
                                 position_ids=positions, **({"synced_gpus": True} if synced else {}))
        answers = self.host.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [{"key": key, "question": q, "answer": a.strip(), "reference": ref}
                for key, q, a, ref, pad in zip(batch["keys"], questions, answers, batch["references"], batch["pad"],
                                               strict=True) if not pad]

    def configure_optimizers(self):
        return configure_optimizers(self, self.cfg.optim)


@dataclass
class LoraSection:
    """LoRA on the host LLM (stage 2; the official code's settings: r 16, alpha 32, dropout 0.05)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"])


@dataclass
class InitSection:
    align: str | None = None  # the linvt.align checkpoint LinVT starts from (None: random, for tests only)
    export: str | None = None  # an `lvu ckpt export` folder: LinVT and the LoRA adapter start from it
    random: bool = False  # start LinVT from random weights (tests, ablations); a fit needs one of the three


@dataclass
class LinVTInstructRecipe(LinVTAlignRecipe):
    lora: LoraSection = field(default_factory=LoraSection)
    init: InitSection = field(default_factory=InitSection)


MEDIA_MARKS = ("<video>", "<image>")  # where LLaVA-format questions put the visual input


def first_exchange(sample: dict[str, Any]) -> tuple[str, str | None]:
    """(question without its media mark, answer or None) of a sample's first human/gpt turn pair (LLaVA format).
    A sample with a video or image must mark it in the question; a text-only sample must not."""
    turns = sample["annotation"].get("conversations") or []
    human = next((t["value"] for t in turns if t.get("from") == "human"), None)
    answer = next((t["value"] for t in turns if t.get("from") == "gpt"), None)
    if human is None:
        raise LvuError(f"sample {sample['__key__']}: no human turn in its conversations")
    marked = any(mark in human for mark in MEDIA_MARKS)
    if not sample.get("is_text") and not marked:
        raise LvuError(f"sample {sample['__key__']}: the question has no '<video>' or '<image>' placeholder: "
                       f"{human[:60]!r}")
    if sample.get("is_text") and marked:
        raise LvuError(f"sample {sample['__key__']}: the question marks a video or image but the sample has none")
    for mark in MEDIA_MARKS:
        human = human.replace(mark, "")
    return human.strip(), answer


def collate_conversations(samples: list[dict[str, Any]]) -> dict[str, Any]:
    batch = _frames_only(samples)
    pairs = [first_exchange(s) for s in samples]
    missing = [s["__key__"] for s, (_, a) in zip(samples, pairs, strict=True) if a is None]
    if missing:
        raise LvuError(f"sample(s) {missing[:3]}: no gpt answer in the conversations (training needs one)")
    batch["questions"], batch["answers"] = [q for q, _ in pairs], [a for _, a in pairs]
    return batch


def collate_questions(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Prediction: each sample's question (a caption-only sample is asked to describe the video) with its answer
    or caption, when present, as the reference."""
    batch = _frames_only(samples)
    pairs = [first_exchange(s) if s["annotation"].get("conversations") else
             (ALIGN_INSTRUCTION, s["annotation"].get("caption")) for s in samples]
    batch["questions"], batch["references"] = [q for q, _ in pairs], [a for _, a in pairs]
    return batch


def _kind(sample: dict[str, Any]) -> str:
    return "text" if sample.get("is_text") else "image" if sample.get("is_image") else "video"


def _frames_only(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Frames padded to the batch's longest video (``frames [B, T, H, W, 3]`` uint8, ``frame_mask [B, T]``; an
    image is one frame, a text-only sample none) and each sample's ``kinds`` entry: video, image or text."""
    longest = max(len(s["frames"]) for s in samples)
    first = samples[0]["frames"]
    frames = torch.zeros((len(samples), longest, *first.shape[1:]), dtype=first.dtype)
    mask = torch.zeros((len(samples), longest), dtype=torch.bool)
    for i, s in enumerate(samples):
        frames[i, :len(s["frames"])] = s["frames"]
        mask[i, :len(s["frames"])] = True
    return {"frames": frames, "frame_mask": mask, "keys": [s["__key__"] for s in samples],
            "kinds": [_kind(s) for s in samples],
            "pad": torch.tensor([bool(s.get("__pad__", False)) for s in samples])}


class LinVTInstruct(LinVTAlign):
    """Stage 2: LoRA on the host LLM and LinVT train; vision encoder, projector and the LLM's weights stay frozen.
    The loss is next-token cross-entropy on the answer only, in the host's chat template."""

    def __init__(self, cfg: LinVTInstructRecipe) -> None:
        super().__init__(cfg)
        self.log_scale = None  # stage 2 has no contrastive loss (an unused parameter would stall DDP)
        from peft import inject_adapter_in_model

        lora = lora_config(cfg.lora)
        try:
            inject_adapter_in_model(lora, self.host.language_model)
        except ValueError as exc:
            raise LvuError(f"lora.targets {list(cfg.lora.targets)} match no module of the host LLM "
                           f"({str(exc).splitlines()[0]})") from None
        self.lora_config = lora
        if cfg.init.align and cfg.init.export:
            raise LvuError("set init.align or init.export, not both")
        if cfg.init.align:
            self._load_align(cfg.init.align)
        if cfg.init.export:
            from lvu.tasks.linvt_export import load_export

            load_export(self, Path(cfg.init.export))
            self.weights_source = cfg.init.export

    def on_fit_start(self) -> None:
        init = self.cfg.init
        if not (init.align or init.export or init.random) and self.trainer.ckpt_path is None:
            raise LvuError("linvt.instruct starts from stage 1: set init.align=CKPT (a linvt.align checkpoint) or "
                           "init.export=DIR (an `lvu ckpt export` folder); init.random=true starts LinVT from random "
                           "weights")

    def _load_align(self, path: str) -> None:
        from lvu.train.ckpt_cli import consolidated_state_dict

        state, client = consolidated_state_dict(Path(path))
        task = (client.get("lvu") or {}).get("task")
        if task not in (None, "linvt.align"):
            raise LvuError(f"init.align: {path} was written by task '{task}', not linvt.align")
        load_linvt_weights(self.linvt, state, f"init.align: {path}")

    def _losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.answer(batch, batch["questions"], batch["answers"])[1].loss, {}


def video_decoder(cfg: LinVTAlignRecipe, split: str, mixed: bool) -> VideoDecoder:
    """Videos sampled as the recipe says; with ``mixed`` (instruction data) also images (one frame) and text-only
    samples. Stage 1 takes videos only: an image would bypass LinVT and train nothing there (it is skipped and
    counted as a bad sample)."""
    sampler = cfg.data.sampler if split == "train" else SamplerConfig(num_frames=cfg.data.eval_frames,
                                                                        allow_repeats=True)
    return VideoDecoder(sampler, size=(cfg.data.frame_size, cfg.data.frame_size), allow_images=mixed,
                        allow_text=mixed)


def _video_data(cfg: LinVTAlignRecipe, collate: Any, mixed: bool) -> ShardDataModule:
    def decode(split: str) -> VideoDecoder:
        return video_decoder(cfg, split, mixed or split == "predict")

    return ShardDataModule(cfg.data, cfg.seed, decode=decode,
                           collate=lambda split: collate_questions if split == "predict" else collate)


def _align_data(cfg: LinVTAlignRecipe) -> ShardDataModule:
    return _video_data(cfg, collate_videos, mixed=False)


def _instruct_data(cfg: LinVTInstructRecipe) -> ShardDataModule:
    return _video_data(cfg, collate_conversations, mixed=True)


def _export(cfg: Any, state: dict[str, Any], client: dict[str, Any], out: Path) -> dict[str, Any]:
    from lvu.tasks.linvt_export import export_linvt

    return export_linvt(cfg, state, client, out)


register_task(TaskSpec("linvt.align", LinVTAlignRecipe, LinVTAlign, _align_data,
                       "LinVT stage 1: align a new LinVT to a frozen image-LLM host on video captions",
                       export=_export))
register_task(TaskSpec("linvt.instruct", LinVTInstructRecipe, LinVTInstruct, _instruct_data,
                       "LinVT stage 2: instruction tuning with LoRA on the host LLM (answers only)", export=_export))

__all__ = ["LinVTAlign", "LinVTAlignRecipe", "LinVTInstruct", "LinVTInstructRecipe", "collate_videos"]
