"""The interface every image-LLM host implements, so video methods (LinVT, FiLA-Video, SEAL) plug into any of them.

A host wraps a transformers vision-language model (or a vision encoder + LLM pair) loaded with
``from_pretrained(path)`` and exposes exactly what a video method needs:

* :meth:`encode_frames`: per-frame visual tokens already in the LLM's embedding space, computed by the host's own
  vision encoder at its own intermediate layer and projector;
* :meth:`encode_images`: an image's tokens exactly as the family's image path computes them;
* :meth:`encode_videos`: videos' tokens as the family's own video path computes them (the no-method baseline);
* :meth:`embed_text`, :meth:`build_inputs_embeds`: text embeddings with visual tokens at the placeholder positions;
* :meth:`forward`: the LLM on ``inputs_embeds`` (loss when ``labels`` are given);
* :meth:`generate`: greedy or sampled decoding from ``inputs_embeds`` (returns only the new tokens);
* :attr:`part_paths`: which submodules are its vision encoder, projector and LLM (trained or frozen per part).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from lvu.errors import LvuError

# Pixel normalisation of each family's image processor, used when a checkpoint has no preprocessor_config.json.
SIGLIP_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

PARTS = ("vision", "projector", "llm")  # a host's parts; a method's own module is the fourth ("method")
PartPaths = dict[str, tuple[str, ...]]  # part -> attribute paths of its submodules or parameters


class ParameterUser(nn.Module):
    """Runs ``fn`` inside a forward of its own, for host code that reads a parameter outside the forward of the module
    that owns it (LLaVA-OneVision's image newline, read by ``get_image_features`` and by its video path). ZeRO-3
    gathers a module's weights only around its forward: read anywhere else, a partitioned weight is an empty tensor
    (which ``torch.cat`` silently drops). ``external`` lists those parameters; lvu.train.strategies registers them with
    DeepSpeed as this module's external parameters, so they are gathered around this forward."""

    def __init__(self, *parameters: nn.Parameter) -> None:
        super().__init__()
        object.__setattr__(self, "external", list(parameters))  # owned elsewhere: not registered here

    def forward(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


class Host(nn.Module):
    """Base class: subclasses set ``model``, ``tokenizer``, ``placeholder``, :attr:`part_paths` and implement
    :meth:`encode_frames`."""

    family: str = ""
    model: nn.Module
    tokenizer: Any
    placeholder: str  # the token that marks where visual tokens go in a prompt
    image_norm: tuple[tuple[float, ...], tuple[float, ...]] = SIGLIP_NORM  # (mean, std) of RGB in [0, 1]
    placeholder_config = "image_token_id"  # the model config field holding the placeholder's id
    language_model_path = "model.model.language_model"  # attribute path of the decoder LLM (what LoRA adapts)
    # Attribute paths (submodules or parameters) of each part; a parameter belongs to the part of its longest
    # matching path, so a projector nested inside the vision tower (Qwen's merger) is still the projector.
    part_paths: ClassVar[PartPaths] = {}
    # Tokens the family's chat format puts around an image's placeholders (Qwen: vision start/end; InternVL: <img>).
    visual_open: str = ""
    visual_close: str = ""
    # What the family's template puts between the visual block and the question ("<image>\n..." in LLaVA).
    visual_separator: str = "\n"

    def __init__(self, model: nn.Module | None = None, tokenizer: Any = None) -> None:
        """Wrap a loaded family model and its tokenizer (hosts built from parts pass neither)."""
        super().__init__()
        if model is not None:
            self.model, self.tokenizer = model, tokenizer
            self.placeholder = tokenizer.convert_ids_to_tokens(getattr(model.config, self.placeholder_config))

    def checkpointed_models(self) -> list[nn.Module]:
        """The transformers models whose layers gradient checkpointing covers (a family model holds both towers)."""
        return [self.model]

    def enable_gradient_checkpointing(self) -> None:
        """transformers' gradient checkpointing on every layer that supports it, non-reentrant (it needs no input
        that requires grad, so frozen embeddings and adapters work)."""
        for model in self.checkpointed_models():
            if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.x's name for it
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` frames -> the float ``[N, 3, H, W]`` the vision encoder expects."""
        mean, std = (torch.tensor(v, dtype=torch.float32, device=frames.device)[:, None, None]
                     for v in self.image_norm)
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        return ((x - mean) / std).to(self.embed_layer.weight.dtype)

    # -- what subclasses provide -------------------------------------------------------------------------------------

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [N, 3, H, W]`` (normalised as the host's processor would) -> visual tokens ``[N, T, D]``: the
        vision encoder's features at the family's layer through the projector."""
        return self.project(self.vision_features(frames))

    def vision_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [N, 3, H, W]`` -> the vision encoder's features ``[N, L, Dv]`` that the projector reads (for
        methods that act before the projector, e.g. FiLA-Video's merge or scene selection)."""
        raise LvuError(f"{self.family} host: its vision features before the projector are not exposed (LLaVA-OneVision "
                       f"and composed hosts expose them)")

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """:meth:`vision_features` ``[N, L, Dv]`` -> tokens in the LLM's embedding space ``[N, T, D]``."""
        raise LvuError(f"{self.family} host: its projector cannot be run on its own (LLaVA-OneVision and composed "
                       f"hosts can)")

    def pool_video_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """The family's per-frame reduction in its video path, ``[N, T, D] -> [N, T', D]`` (none by default)."""
        return tokens

    def video_end(self) -> torch.Tensor:
        """Tokens that close a video in the family's video path, ``[E, D]`` (none by default)."""
        return self.embed_layer.weight.new_zeros(0, self.hidden_size)

    def encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images [N, 3, H, W]`` -> each image's visual tokens ``[K_i, D]``, exactly as the family's own image path
        computes them (so a video method that passes images through keeps the host's image behaviour). Families
        whose image path is the per-frame path use this default."""
        return list(self.encode_frames(images))

    def encode_videos(self, frames: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """The family's own video path: ``frames [sum(counts), 3, H, W]``, the frames of each video one after the
        other (``counts[v]`` of video ``v``) -> each video's tokens ``[K_v, D]``: each frame's :meth:`encode_frames`
        tokens reduced by :meth:`pool_video_frames`, in time order, then :meth:`video_end`. One pass of the vision
        encoder for every frame of the batch."""
        pooled = self.pool_video_frames(self.encode_frames(frames))
        return self.join_video_frames(pooled, counts)

    def join_video_frames(self, pooled: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """Each video's pooled frame tokens ``[n_v, T', D]`` in a row, then :meth:`video_end` (inside the host's
        :class:`ParameterUser`, when its video end is a parameter)."""
        user = getattr(self, "newline_user", None)
        return user(self._join, pooled, counts) if user is not None else self._join(pooled, counts)

    def _join(self, pooled: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        end = self.video_end().to(pooled.dtype)
        return [torch.cat([chunk.flatten(0, 1), end]) for chunk in pooled.split(counts)]

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     image_sizes: list[list[tuple[int, int]]] | None = None) -> torch.Tensor | None:
        """Position ids the LLM needs for ``input_ids`` (None: its default 1-D positions). ``image_sizes[b]`` lists
        the pixel sizes of the images whose :meth:`encode_images` tokens sample ``b`` holds, in prompt order (empty
        when its placeholders hold other tokens); families with 2-D image positions need it."""
        return None

    def visual_prompt(self, count: int) -> str:
        """The prompt text for ``count`` visual tokens: placeholders inside the family's image delimiters."""
        return f"{self.visual_open}{self.placeholder * count}{self.visual_close}" if count else ""

    # -- shared ----------------------------------------------------------------------------------------------------

    @property
    def language_model(self) -> nn.Module:
        """The decoder LLM (what LoRA adapts)."""
        return self.get_submodule(self.language_model_path)

    @classmethod
    def part_of(cls, name: str) -> str:
        """The part (vision, projector, llm) holding the host parameter or buffer ``name`` (a class method: an export
        sorts a checkpoint's tensors without building the host)."""
        return cls.part_path(name)[0]

    @classmethod
    def part_path(cls, name: str) -> tuple[str, str]:
        """(part, the longest of its :attr:`part_paths` that holds ``name``)."""
        best, part = "", None
        for candidate, paths in cls.part_paths.items():
            for path in paths:
                if (name == path or name.startswith(path + ".")) and len(path) > len(best):
                    best, part = path, candidate
        if part is None:
            raise LvuError(f"{cls.family} host: {name} belongs to none of its parts ({', '.join(cls.part_paths)})")
        return part, best

    def part_modules(self, part: str) -> list[tuple[str, nn.Module]]:
        """``(path, module)`` of each submodule listed for ``part`` (parameters listed directly are skipped)."""
        modules = dict(self.named_modules())
        return [(path, modules[path]) for path in self.part_paths[part] if path in modules]

    def unreachable_parameters(self, frame_size: int) -> set[str]:
        """Vision and projector parameters whose values never reach the LLM (transformer layers past the feature
        layer the family reads, a pooling head, a final norm): found by one backward pass from every visual path
        on a blank frame. A part trained in full keeps them frozen, or they would never get a gradient (DDP
        stops on such parameters; LLaVA-NeXT deletes them)."""
        trainable = {name: p.requires_grad for name, p in self.named_parameters()}
        watched = [(name, p) for name, p in self.named_parameters() if self.part_of(name) in ("vision", "projector")]
        for _, p in watched:
            p.requires_grad_(True)
            p.grad = None
        blank = torch.zeros(1, frame_size, frame_size, 3, dtype=torch.uint8, device=self.embed_layer.weight.device)
        with torch.enable_grad():  # a host may be built inside torch.no_grad() (evaluation scripts)
            pixels = self.normalize(blank)
            outputs = [self.encode_frames(pixels), *self.encode_images(pixels), *self.encode_videos(pixels, [1])]
            sum(out.float().sum() for out in outputs).backward()
        unreachable = {name for name, p in watched if p.grad is None}
        for name, p in self.named_parameters():
            p.grad = None
            p.requires_grad_(trainable[name])
        return unreachable

    @property
    def hidden_size(self) -> int:
        return self.embed_layer.embedding_dim

    @property
    def embed_layer(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def placeholder_id(self) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(self.placeholder)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise LvuError(f"{self.family} host: the tokenizer has no '{self.placeholder}' token")
        return int(token_id)

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_layer(input_ids)

    def build_inputs_embeds(self, input_ids: torch.Tensor, visual: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Text embeddings of ``input_ids [B, L]`` with the rows of ``visual`` written, in order, at the
        placeholder positions: ``visual`` is ``[B, K, D]`` (K placeholders per sample) or a list of ``[K_b, D]``.
        Samples without visual input (text-only) have no placeholders and an empty ``[0, D]`` entry."""
        embeds = self.embed_text(input_ids)
        slots = input_ids == self.placeholder_id
        rows = visual if isinstance(visual, torch.Tensor) else None
        per_sample = [int(n) for n in slots.sum(1)]
        given = [int(v.shape[0]) for v in visual] if rows is None else [rows.shape[1]] * rows.shape[0]
        if per_sample != given:
            missing = [i for i, (n, g) in enumerate(zip(per_sample, given, strict=True)) if n == 0 and g > 0]
            if missing:
                raise LvuError(f"sample(s) {missing} have visual input but no '{self.placeholder}' placeholder in "
                               f"the prompt")
            raise LvuError(f"placeholders per sample {per_sample} do not match the visual tokens given {given}")
        flat = rows.reshape(-1, rows.shape[-1]) if rows is not None else torch.cat(list(visual), 0)
        return embeds.masked_scatter(slots[..., None].expand_as(embeds), flat.to(embeds.dtype))

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> Any:
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels,
                          position_ids=position_ids, use_cache=False)

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int = 32,
                 position_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """New token ids ``[B, <= max_new_tokens]`` (greedy unless sampling arguments are given)."""
        config = self.model.generation_config
        config.pad_token_id = self.tokenizer.pad_token_id
        config.eos_token_id = self.tokenizer.eos_token_id
        extra = {"position_ids": position_ids} if position_ids is not None else {}
        return self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   max_new_tokens=max_new_tokens, do_sample=kwargs.pop("do_sample", False),
                                   **extra, **kwargs)
