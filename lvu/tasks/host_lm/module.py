"""The LightningModule every video-LLM method on an image-LLM host builds on.

It owns the host and what every such method needs around it:

* which parts train and how (:mod:`lvu.tasks.host_lm.parts`): vision encoder, projector, LLM and the method's own
  module, each frozen, fully trained or adapted with LoRA, at its own learning rate;
* prompts in the host's chat template with labels on every assistant turn, and the optional time instruction
  (:mod:`lvu.tasks.host_lm.conversation`);
* batches that mix videos, images and text-only samples: videos through the method, images through the host's own
  image path, and every rank running the same modules whatever its local mix (ZeRO-3 gathers weights collectively);
* greedy generation for ``lvu predict`` (lockstep under ZeRO-3);
* ``init.from`` (:mod:`lvu.tasks.host_lm.source`) and checkpoints that hold only what trains.

A method subclasses :class:`HostLMTask`, builds its module in :meth:`~HostLMTask.build_method`, turns videos into
tokens in :meth:`~HostLMTask.video_tokens` and may add losses in :meth:`~HostLMTask.extra_losses`. Without a method,
videos take the host's own video path: the no-method baseline (``lvu.tasks.uniform``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from lvu.data.sampling import time_instruction
from lvu.errors import LvuError
from lvu.schema import user_keys
from lvu.tasks.host_lm.batch import MediaBatch, repeat_sample
from lvu.tasks.host_lm.config import HostLMRecipe, Target, TimeInstruction
from lvu.tasks.host_lm.conversation import (
    IGNORE,
    Conversation,
    Turn,
    chat_messages,
    tokenize_for_generation,
    tokenize_for_training,
)
from lvu.tasks.host_lm.evaluation import BenchmarkAnswerer
from lvu.tasks.host_lm.host import build_host
from lvu.tasks.host_lm.parts import PartPlan
from lvu.tasks.host_lm.source import load_init, read_source
from lvu.tasks.optim import configure_optimizers


@dataclass
class VideoInput:
    """The videos of a batch (padded to the longest), as a method receives them."""

    frames: torch.Tensor  # [V, T, H, W, 3] uint8
    frame_mask: torch.Tensor  # [V, T] bool
    timestamps: torch.Tensor  # [V, T] seconds
    durations: torch.Tensor  # [V] seconds
    shots: torch.Tensor | None = None  # [V, T] each frame's shot number (data.shots on), -1 on padding


@dataclass
class TextInput:
    """Each video's first question as the LLM's input token embeddings (text conditioning; no gradient)."""

    embeds: torch.Tensor  # [V, L, D]
    mask: torch.Tensor  # [V, L] bool


@dataclass
class VideoTokens:
    """What a method makes of a batch's videos."""

    tokens: list[torch.Tensor]  # each video's tokens [K_v, D] in the LLM's embedding space
    times: list[list[float]] | None = None  # per video, the times (s) its tokens describe (None: the sampled frames')


@dataclass
class VisualTokens:
    """Every sample's visual tokens for its prompt."""

    per_sample: list[torch.Tensor]  # [K_b, D] in batch order; [0, D] for a text-only sample
    videos: list[torch.Tensor]  # the method's tokens of each video sample, in batch order
    is_video: torch.Tensor  # [B] bool
    anchor: torch.Tensor  # a zero that ties stand-in outputs into the loss (see HostLMTask.visual_tokens)
    times: list[list[float] | None]  # per sample: the frame times its tokens describe (videos only)


@dataclass
class LLMInputs:
    ids: torch.Tensor  # [B, L] token ids, left-padded (placeholders where visual tokens go)
    embeds: torch.Tensor  # [B, L, D]
    mask: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L], IGNORE outside answers
    positions: torch.Tensor | None  # what the host's LLM needs (Qwen: M-RoPE [3, B, L])


@dataclass
class AskedVideo:
    """One video asked several questions: the video once per question, and every row's visual tokens."""

    batch: MediaBatch
    visual: VisualTokens


@dataclass
class ContinuationScores:
    """One prompt's continuations, scored."""

    logprobs: torch.Tensor  # [C] log p(continuation | prompt), summed over its tokens
    greedy: torch.Tensor  # [C] bool: every token of it is the model's most likely next token


@dataclass
class LossTerm:
    """A method's extra loss: ``weight * value`` joins the total; ``value`` is logged."""

    value: torch.Tensor
    weight: float = 1.0


def zero_stage(strategy: Any) -> int | None:
    config = getattr(strategy, "config", None)
    return (config or {}).get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None


def answer_loss_name(cfg: HostLMRecipe) -> str:
    return "caption_loss" if cfg.data.target == Target.caption else "answer_loss"


def host_lm_metrics(task: type[HostLMTask]) -> Callable[[HostLMRecipe], frozenset[str]]:
    """``TaskSpec.metrics`` of a host-LM task: what ``_step`` logs (the total loss, the answers', the method's) for
    training and validation."""

    def metrics(cfg: HostLMRecipe) -> frozenset[str]:
        names = ("loss", answer_loss_name(cfg), *task.extra_loss_names(cfg))
        return frozenset(f"{split}/{name}" for split in ("train", "val") for name in names)

    return metrics


class HostLMTask(L.LightningModule):
    """A video method on an image-LLM host (see the module docstring)."""

    uses_text: ClassVar[bool] = False  # the method reads each video's question (TextInput) in video_tokens

    def __init__(self, cfg: HostLMRecipe) -> None:
        super().__init__()
        self.cfg = cfg
        self.host = build_host(cfg.host)
        self.plan = PartPlan(self.host, cfg.parts, cfg.lora, cfg.data.frame_size)
        built = self.build_method()
        for name, part in built.items():  # registered after the host: parameter order host, then method
            setattr(self, name, part)
        self.method_modules = tuple(name for name, part in built.items() if isinstance(part, nn.Module))
        self.plan.inject_lora(self, {name: getattr(self, name) for name in self.method_modules})
        self.plan.set_trainable(self)
        self.weights_source: str | None = None  # where trained weights came from at build time (init.from)
        if cfg.init.from_:
            load_init(self, self.plan, read_source(Path(cfg.init.from_)), _part_names(cfg.init.parts),
                      self.method_modules, user_keys(_plain(cfg)))
            self.weights_source = cfg.init.from_
        # Checkpoints hold only what trains (frozen parts are rebuilt from host.path and init.from): a module load
        # must not ask for the rest. `lvu fit --ckpt` compatibility is checked before loading (lvu.train.compat).
        self.strict_loading = False

    # -- what a method provides ------------------------------------------------------------------------------------

    def build_method(self) -> dict[str, nn.Module | nn.Parameter]:
        """The method's own modules (and loss parameters) by attribute name, built from ``self.cfg`` and
        ``self.host``; they form the ``method`` part. None for the no-method baseline."""
        return {}

    def video_tokens(self, videos: VideoInput, text: TextInput | None) -> VideoTokens:
        """Each video's tokens ``[K_v, D]`` in the LLM's embedding space (and, when the method regroups frames, the
        times they describe, for the time instruction). This default is the host's own video path (the
        uniform-frames baseline). A method must run the same modules once per call whatever the number of videos
        (ZeRO-3 needs every rank to call them alike): encode all frames of the batch in one pass."""
        frames = videos.frames[videos.frame_mask]
        counts = videos.frame_mask.sum(1).tolist()
        return VideoTokens(self.host.encode_videos(self.host.normalize(frames), counts))

    def extra_losses(self, batch: MediaBatch, visual: VisualTokens) -> dict[str, LossTerm]:
        """Losses the method adds to the answer loss (LinVT's contrastive alignment); their names are
        :meth:`extra_loss_names`."""
        return {}

    @classmethod
    def extra_loss_names(cls, cfg: HostLMRecipe) -> tuple[str, ...]:
        """The keys :meth:`extra_losses` returns under ``cfg`` (known before any model exists: see
        :func:`host_lm_metrics`)."""
        return ()

    # -- modes, checkpoints, optimiser ------------------------------------------------------------------------------

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "plan"):
            self.plan.set_modes(self, mode)
        return self

    def saved_in_checkpoint(self, name: str) -> bool:
        """Whether checkpoints hold tensor ``name`` (the parts that train; see lvu.tasks.host_lm.parts)."""
        return self.plan.saved(name)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if self.plan.saved(k)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:  # DeepSpeed restores the module itself and passes no state_dict
            own = {k: v for k, v in self.state_dict().items() if not self.plan.saved(k)}
            checkpoint["state_dict"] = {**own, **checkpoint["state_dict"]}

    def configure_optimizers(self):
        optim = self.cfg.optim
        return configure_optimizers(self, optim, rates=lambda name: self.plan.rate(name, optim.lr,
                                                                                   optim.weight_decay))

    def on_fit_start(self) -> None:
        init = self.cfg.init
        if init.required and not init.from_ and self.trainer.ckpt_path is None:
            raise LvuError(f"{self.cfg.name} starts from an earlier stage: set init.from=CKPT (a checkpoint of that "
                           f"stage, a DeepSpeed folder or an `lvu ckpt export` folder); init.required=false starts "
                           f"from fresh weights instead")

    # -- the forward path -------------------------------------------------------------------------------------------

    def question_embeddings(self, conversations: list[Conversation]) -> TextInput:
        tok = self.host.tokenizer
        enc = tok([c.first_question for c in conversations], add_special_tokens=False, padding=True,
                  return_tensors="pt")
        with torch.no_grad():
            embeds = self.host.embed_text(enc["input_ids"].to(self.device))
        return TextInput(embeds, enc["attention_mask"].to(self.device).bool())

    def visual_tokens(self, batch: MediaBatch) -> VisualTokens:
        """Each sample's visual tokens: a video's from the method, an image's exactly as the host encodes images
        (the host's image ability is kept), nothing for a text-only sample.

        Every step runs the same modules on every rank, whatever the mix of the local batch (ZeRO-3 gathers each
        module's weights collectively and hangs if one rank skips a module): the image path and the method each
        see a blank stand-in when the batch has nothing for them, and the stand-in's output joins the loss times
        zero (the anchor) so that its backward runs too.
        """
        frames, is_video, is_image = batch.frames, batch.is_video, batch.is_image
        anchor = frames.new_zeros((), dtype=torch.float32)
        blank = frames.new_zeros(1, *frames.shape[2:])
        has_images = bool(is_image.any())
        image_tokens = self.host.encode_images(self.host.normalize(frames[is_image, 0] if has_images else blank))
        if not has_images:
            anchor = anchor + sum(t.float().sum() for t in image_tokens) * 0.0
            image_tokens = []
        rows = is_video.nonzero().squeeze(1).tolist()
        if rows:
            videos = VideoInput(frames[rows], batch.frame_mask[rows], batch.timestamps[rows], batch.durations[rows],
                                batch.shots[rows] if batch.shots is not None else None)
            text = self.question_embeddings([batch.conversations[i] for i in rows]) if self.uses_text else None
            made = self.video_tokens(videos, text)
            video_tokens = made.tokens
            times = made.times or [t[m].tolist() for t, m in zip(videos.timestamps, videos.frame_mask, strict=True)]
        else:
            stand_in = VideoInput(blank[None], batch.frame_mask.new_ones(1, 1), batch.timestamps.new_zeros(1, 1),
                                  batch.durations.new_zeros(1))
            text = self.question_embeddings(batch.conversations[:1]) if self.uses_text else None
            anchor = anchor + sum(t.float().sum() for t in self.video_tokens(stand_in, text).tokens) * 0.0
            video_tokens, times = [], []
        per_sample, sample_times = [], []
        videos_left, times_left, images_left = iter(video_tokens), iter(times), iter(image_tokens)
        nothing = frames.new_zeros(0, self.host.hidden_size, dtype=torch.float)
        for kind in batch.kinds:
            if kind == "video":
                per_sample.append(next(videos_left))
                sample_times.append(next(times_left))
            else:
                per_sample.append(next(images_left) if kind == "image" else nothing)
                sample_times.append(None)
        return VisualTokens(per_sample, video_tokens, is_video, anchor, sample_times)

    def llm_inputs(self, batch: MediaBatch, visual: VisualTokens, *, answers: bool) -> LLMInputs:
        """The chat-template prompts of the batch, left-padded, with the visual tokens in place. ``answers``: the
        conversations' answers are in the prompts and labelled (training, validation); otherwise the prompts end
        with the assistant's turn (generation)."""
        tok, prompt = self.host.tokenizer, self.cfg.prompt
        style = TimeInstruction(prompt.time_instruction)
        rows, labels = [], []
        for b, (conversation, tokens) in enumerate(zip(batch.conversations, visual.per_sample, strict=True)):
            times = visual.times[b]
            timing = (time_instruction(times, float(batch.durations[b]), style=style.value)
                      if style != TimeInstruction.none and times else None)
            messages = chat_messages(conversation, self.host.visual_prompt(len(tokens)), self.host.visual_separator,
                                     timing)
            if answers:
                # Evaluation padding copies (and their answers) carry no loss.
                encoded = tokenize_for_training(tok, messages, prompt.max_answer_tokens, train=not bool(batch.pad[b]))
                rows.append(encoded.ids)
                labels.append(encoded.labels)
            else:
                rows.append(tokenize_for_generation(tok, messages))
                labels.append([IGNORE] * len(rows[-1]))
        length = max(map(len, rows))
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows], device=self.device)
        lab = torch.tensor([[IGNORE] * (length - len(r)) + r for r in labels], device=self.device)
        size = tuple(batch.frames.shape[2:4])
        image_sizes = [[size] if kind == "image" else [] for kind in batch.kinds]
        # The anchor (zero) makes the LLM's input need a gradient on every rank, as method tokens make it on a rank
        # with videos: backward then visits the same modules everywhere (ZeRO-3 gathers frozen ones there too).
        embeds = self.host.build_inputs_embeds(ids, visual.per_sample) + visual.anchor
        return LLMInputs(ids, embeds, mask, lab, self.host.position_ids(ids, mask, image_sizes))

    @staticmethod
    def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy averaged over the answer tokens of the batch (zero, still in the graph, when
        the batch has none: evaluation padding only)."""
        targets = labels[:, 1:]
        scores = logits[:, :-1].float()
        count = (targets != IGNORE).sum()
        total = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                                reduction="sum")
        return total / count.clamp(min=1)

    @property
    def answer_loss_name(self) -> str:
        return answer_loss_name(self.cfg)

    def losses(self, batch: MediaBatch) -> dict[str, LossTerm]:
        """Every loss term of a batch: the answers', then the method's."""
        visual = self.visual_tokens(batch)
        inputs = self.llm_inputs(batch, visual, answers=True)
        out = self.host(inputs.embeds, inputs.mask, None, inputs.positions)
        return {self.answer_loss_name: LossTerm(self.answer_loss(out.logits, inputs.labels)),
                **self.extra_losses(batch, visual)}

    # -- steps ---------------------------------------------------------------------------------------------------------

    def _step(self, batch: MediaBatch, split: str) -> torch.Tensor:
        terms = self.losses(batch)
        loss = sum(term.weight * term.value for term in terms.values())
        values = {"loss": loss, **{name: term.value for name, term in terms.items()}}
        real = max(1, int((~batch.pad).sum()))
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, prog_bar=split == "train",
                      sync_dist=split != "train", batch_size=real)
        return loss

    def training_step(self, batch: MediaBatch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: MediaBatch, batch_idx: int) -> None:
        self._step(batch, "val")

    def predict_step(self, batch: MediaBatch, batch_idx: int) -> list[dict[str, Any]]:
        """Greedy answers to each sample's last question (padding copies of the last batch are left out); under
        ``lvu eval``, each video's benchmark questions answered and graded (lvu.tasks.host_lm.evaluation)."""
        if batch.benchmark is not None:
            return BenchmarkAnswerer(self, self.cfg.eval)(batch)
        inputs = self.llm_inputs(batch, self.visual_tokens(batch), answers=False)
        answers = self._generate(inputs, self.cfg.generation.max_new_tokens)
        return [{"key": key, "question": c.last_question, "answer": a, "reference": c.reference}
                for key, c, a, pad in zip(batch.keys, batch.conversations, answers, batch.pad.tolist(), strict=True)
                if not pad]

    def _generate(self, inputs: LLMInputs, max_new_tokens: int) -> list[str]:
        """Greedy continuations of the prompts, decoded and stripped."""
        # ZeRO-3 gathers weights collectively at every forward: ranks must decode in lockstep even when one rank's
        # answers end early (transformers' synced_gpus keeps every rank stepping until all are done).
        trainer = self._trainer  # None outside a Lightning run (the lmms-eval plugin)
        synced = trainer is not None and trainer.world_size > 1 and zero_stage(trainer.strategy) == 3
        new = self.host.generate(inputs.embeds, inputs.mask, max_new_tokens=max_new_tokens,
                                 position_ids=inputs.positions, **({"synced_gpus": True} if synced else {}))
        return [a.strip() for a in self.host.tokenizer.batch_decode(new, skip_special_tokens=True)]

    # -- one video, several questions (lvu eval; the lmms-eval plugin) --------------------------------------------

    def ask(self, batch: MediaBatch, b: int, questions: list[str]) -> AskedVideo:
        """Sample ``b`` of ``batch`` with each of ``questions`` as its prompt. The method runs once over the video
        unless it reads the question (``uses_text``: once per question)."""
        asked = repeat_sample(batch, b, [Conversation([Turn("user", q)]) for q in questions])
        if self.uses_text:
            return AskedVideo(asked, self.visual_tokens(asked))
        one = self.visual_tokens(repeat_sample(batch, b, asked.conversations[:1]))
        n = len(questions)
        return AskedVideo(asked, VisualTokens(one.per_sample * n, one.videos * n, one.is_video.repeat(n), one.anchor,
                                              one.times * n))

    def lockstep_count(self, count: int) -> int:
        """``count`` calls to make on this rank; under ZeRO-3 on several ranks the most any rank needs, since every
        forward gathers weights collectively (a rank with fewer makes throw-away calls)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1 or zero_stage(trainer.strategy) != 3:
            return count
        most = trainer.strategy.reduce(torch.tensor([count], device=self.device), reduce_op="max")
        return int(most.item())

    def generate_answers(self, asked: AskedVideo, max_new_tokens: int) -> list[str]:
        """Greedy answers to each question of ``asked``."""
        return self._generate(self.llm_inputs(asked.batch, asked.visual, answers=False), max_new_tokens)

    @torch.no_grad()
    def continuation_scores(self, asked: AskedVideo, continuations: list[list[str]]) -> list[ContinuationScores]:
        """Each question's continuations (``[C_q]`` strings) scored after the prompt's opened assistant turn. When
        every continuation is one token (option letters), one forward of the prompts scores them all; otherwise each
        (prompt, continuation) is a row of one forward."""
        tok = self.host.tokenizer
        inputs = self.llm_inputs(asked.batch, asked.visual, answers=False)
        wanted = [[tok(c, add_special_tokens=False)["input_ids"] for c in row] for row in continuations]
        if any(not ids for row in wanted for ids in row):
            raise LvuError("a continuation to score tokenises to nothing")
        if all(len(ids) == 1 for row in wanted for ids in row):
            logits = self.host(inputs.embeds, inputs.mask, None, inputs.positions).logits
            last = logits[:, -1].float().log_softmax(-1)  # prompts are left-padded: the last column is their end
            best = last.argmax(-1)
            return [ContinuationScores(last[i, [ids[0] for ids in row]],
                                       torch.tensor([ids[0] == int(best[i]) for ids in row]))
                    for i, row in enumerate(wanted)]
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(inputs.ids, inputs.mask, strict=True)]
        owners = [i for i, row in enumerate(wanted) for _ in row]
        rows = [prompts[i] + ids for i, row in enumerate(wanted) for ids in row]
        length, pad = max(map(len, rows)), tok.pad_token_id
        ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows], device=self.device)
        size = tuple(asked.batch.frames.shape[2:4])
        image_sizes = [[size] if asked.batch.kinds[i] == "image" else [] for i in owners]
        embeds = self.host.build_inputs_embeds(ids, [asked.visual.per_sample[i] for i in owners])
        logits = self.host(embeds, mask, None, self.host.position_ids(ids, mask, image_sizes)).logits
        logprobs = logits.float().log_softmax(-1)
        scored, r = [], 0
        for row in wanted:
            sums, greedy = [], []
            for cont in row:
                n = len(cont)  # the continuation's tokens are the row's last n; each is predicted one column earlier
                predicted, target = logprobs[r, -n - 1:-1], ids[r, -n:]
                sums.append(predicted.gather(-1, target[:, None]).sum())
                greedy.append(bool((predicted.argmax(-1) == target).all()))
                r += 1
            scored.append(ContinuationScores(torch.stack(sums), torch.tensor(greedy)))
        return scored


def _part_names(parts: list[Any] | None) -> list[str] | None:
    return None if parts is None else [getattr(p, "value", p) for p in parts]


def _plain(cfg: Any) -> dict[str, Any]:
    """The typed recipe as plain values (for the settings named in init.from's error)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)  # type: ignore[return-value]
