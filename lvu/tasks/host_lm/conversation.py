"""Samples to chat-template prompts with labels on every assistant turn.

A sample's LLaVA conversation (``{"from": "human"|"gpt", "value": ...}`` turns, the first human turn marking its
video or image with ``<video>``/``<image>``) becomes chat messages: the visual placeholders (and, optionally, the time
instruction) open the first user turn, the marks are removed everywhere. The host's own chat template renders the
messages; the label mask covers each assistant answer and the end-of-turn token the template writes after it, and
nothing else, so a multi-turn sample trains every answer (LLaVA's practice).

The answers are located without knowing the template: rendering the messages up to each assistant turn with the
generation prompt gives the exact text that precedes the answer in the full rendering. A template that does not
render conversations incrementally that way is refused with a clear error.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lvu.errors import LvuError

MEDIA_MARKS = ("<video>", "<image>")  # where LLaVA-format questions put the visual input
IGNORE = -100  # label of tokens that carry no loss (transformers' and torch's ignore index)


# Not frozen: Lightning's batch transfer rebuilds the dataclasses it finds in a batch, and refuses frozen ones.
@dataclass
class Turn:
    role: str  # "user" or "assistant"
    text: str


@dataclass
class Conversation:
    """A sample's turns (user first, marks removed), and the reference answer when it is asked to answer."""

    turns: list[Turn]
    reference: str | None = None

    @property
    def first_question(self) -> str:
        return self.turns[0].text

    @property
    def last_question(self) -> str:
        return next(t.text for t in reversed(self.turns) if t.role == "user")


def _strip_marks(text: str) -> str:
    for mark in MEDIA_MARKS:
        text = text.replace(mark, "")
    return text.strip()


def conversation_of(sample: dict[str, Any], *, caption: bool, caption_prompt: str,
                    caption_prompts: Sequence[str] = ()) -> Conversation:
    """The training conversation of a decoded sample: its caption answering a caption question (``caption``), or
    its LLaVA conversation, whose every assistant turn trains.

    The caption question is ``caption_prompt``, or, when ``caption_prompts`` lists several, the one the sample's
    key picks (a hash, not a random draw: the same in every worker, epoch and resumed run)."""
    key, annotation = sample["__key__"], sample["annotation"]
    if caption:
        text = annotation.get("caption")
        if not text:
            raise LvuError(f"sample {key}: no caption in its json (data.target=caption needs one)")
        question = caption_prompts[zlib.crc32(str(key).encode()) % len(caption_prompts)] if caption_prompts \
            else caption_prompt
        return Conversation([Turn("user", question), Turn("assistant", text)])
    turns = _llava_turns(sample)
    if turns[-1].role != "assistant":
        raise LvuError(f"sample {key}: the conversation ends without a gpt answer (training needs one)")
    return Conversation(turns)


def question_of(sample: dict[str, Any], *, caption_prompt: str) -> Conversation:
    """What prediction asks of a sample: the conversation up to its last question (earlier answers stay as
    history), with the answer that follows it, or the sample's caption for ``caption_prompt``, as the reference."""
    annotation = sample["annotation"]
    if not annotation.get("conversations"):
        return Conversation([Turn("user", caption_prompt)], annotation.get("caption"))
    turns = _llava_turns(sample)
    last_user = max(i for i, t in enumerate(turns) if t.role == "user")
    reference = turns[last_user + 1].text if last_user + 1 < len(turns) else None
    return Conversation(turns[:last_user + 1], reference)


def _llava_turns(sample: dict[str, Any]) -> list[Turn]:
    key = sample["__key__"]
    raw = sample["annotation"].get("conversations") or []
    roles = {"human": "user", "gpt": "assistant"}
    turns = [Turn(roles[t["from"]], t.get("value") or "") for t in raw if t.get("from") in roles]
    if not turns or turns[0].role != "user":
        raise LvuError(f"sample {key}: its conversations must start with a human turn")
    for previous, turn in itertools.pairwise(turns):
        if previous.role == turn.role:
            raise LvuError(f"sample {key}: two {turn.role} turns in a row; turns must alternate human/gpt")
    marked = any(mark in turns[0].text for mark in MEDIA_MARKS)
    if not sample.get("is_text") and not marked:
        raise LvuError(f"sample {key}: the question has no '<video>' or '<image>' placeholder: "
                       f"{turns[0].text[:60]!r}")
    if sample.get("is_text") and any(mark in t.text for t in turns for mark in MEDIA_MARKS):
        raise LvuError(f"sample {key}: the question marks a video or image but the sample has none")
    return [Turn(t.role, _strip_marks(t.text)) for t in turns]


def chat_messages(conversation: Conversation, visual: str, separator: str, time_text: str | None = None
                  ) -> list[dict[str, str]]:
    """Chat messages of ``conversation`` with the ``visual`` placeholder block (and the time instruction) opening
    the first user turn, as LLaVA-Video writes ``<image>\\n{time instruction}\\n{question}``."""
    messages = [{"role": t.role, "content": t.text} for t in conversation.turns]
    head = time_text + "\n" if time_text else ""
    first = head + messages[0]["content"]
    messages[0]["content"] = f"{visual}{separator}{first}" if visual else first
    return messages


@dataclass(frozen=True)
class Tokens:
    """A tokenised prompt and its labels (``IGNORE`` outside the assistant answers)."""

    ids: list[int]
    labels: list[int]


def _render(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def tokenize_for_training(tokenizer: Any, messages: list[dict[str, str]], max_answer_tokens: int,
                          train: bool = True) -> Tokens:
    """Token ids of the rendered conversation with labels on every assistant answer and its end-of-turn token
    (``train=False``: no labels, e.g. evaluation padding copies). Each answer is cut to ``max_answer_tokens``."""
    full = _render(tokenizer, messages, generation=False)
    eos = tokenizer.eos_token or ""
    pieces: list[tuple[str, bool]] = []
    done = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], generation=True)
        start, content = len(before), message["content"]
        if not full.startswith(before) or full[start:start + len(content)] != content:
            raise LvuError("the host's chat template does not render a conversation turn by turn (the text before "
                           f"assistant turn {i} changes once the turn is added); its answers cannot be located")
        end = start + len(content)
        if eos and full.startswith(eos, end):
            end += len(eos)
        pieces += [(full[done:start], False), (full[start:end], True)]
        done = end
    if full[done:].strip():  # anything after the last answer other than the template's trailing newline
        pieces.append((full[done:], False))
    ids: list[int] = []
    labels: list[int] = []
    for text, is_answer in pieces:
        if not text:
            continue
        piece = tokenizer(text, add_special_tokens=False, truncation=is_answer,
                          max_length=max_answer_tokens if is_answer else None)["input_ids"]
        ids += piece
        labels += piece if is_answer and train else [IGNORE] * len(piece)
    return Tokens(ids, labels)


def tokenize_for_generation(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the conversation so far, ending with the template's assistant prompt."""
    return tokenizer(_render(tokenizer, messages, generation=True), add_special_tokens=False)["input_ids"]
