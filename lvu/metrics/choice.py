"""Multiple-choice answers: reading the option letter out of a model's free text, and accuracy overall and per tag.

Benchmarks' own scorers get this wrong in known ways (``../shared/ANCHORS.md``, "Evaluation conventions"): MVBench's
regex runs after lowercasing, so the article "a" reads as option A, and several scorers drop empty predictions from
the denominator. Here every question counts; an answer with no readable letter is wrong and reported as unparsable,
an empty one as empty.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torchmetrics import Metric

LETTERS = string.ascii_uppercase


class Parse(str, Enum):
    """How an answer was read (or why it could not be)."""

    parenthesised = "parenthesised"  # "(B)", "(b) the cat"
    leading = "leading"  # "B", "B.", "b)", "C: a cat", "B the cat" when "the cat" is option B
    cue = "cue"  # "The answer is B", "Answer: (C", "Best option: D", "option c."
    option_text = "option_text"  # the text of exactly one option, without its letter
    lone_letter = "lone_letter"  # one option letter standing alone somewhere ("I'd say B here")
    likelihood = "likelihood"  # likelihood mode: the most likely option, nothing read from text
    failed = "failed"  # the question's video could not be read: no answer (wrong, reported apart)
    empty = "empty"
    unparsable = "unparsable"


@dataclass(frozen=True)
class Choice:
    letter: str | None  # "A", "B", ... (None: empty or unparsable)
    how: Parse


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


# Words after "A" that make it a letter ("A is correct"), not the article ("A dog runs").
_COPULAS = {"is", "was", "seems", "looks", "appears", "would", "should", "could", "might", "must", "fits", "matches"}
_ANSWER_CUE = re.compile(r"(?:final answer|correct answer|best answer|answer|best option|correct option|correct choice)"
                         r"\s*(?:is|would be|:)?\s*[:\-]?\s*\(?\s*([A-Za-z])(?![A-Za-z'])", re.IGNORECASE)
_OPTION_CUE = re.compile(r"\b(?i:option|choice)\s+\(?([A-Z])\)?(?![A-Za-z'])")  # the letter itself upper case


def extract_choice(text: str | None, options: Sequence[str]) -> Choice:
    """The option letter a free-text answer gives among ``options`` (their texts, in letter order).

    Rules, first match wins: the last answer cue ("the answer is B", "Answer: (C", "Best option: D"; lower case only
    when punctuation or the end follows, so "the answer is a dog" is not A); a letter opening the answer followed by
    punctuation or the end ("B.", "c)"), or by that option's own text; the last "option C" / "choice C"; the one
    distinct parenthesised letter ("(B)"; a list of several is the options being quoted); the text of exactly one
    option; one distinct option letter standing alone ("I think D"). A letter used as a word is not a choice: "A"
    before a lower-case word other than "is", "was", ... is the article, and where options start with a one-letter
    word (EgoSchema's "C" for the camera wearer), that letter before a lower-case word is that word. A letter beyond
    the options is never a choice."""
    if text is None or not text.strip():
        return Choice(None, Parse.empty)
    valid = LETTERS[: len(options)]
    words = {o.split()[0] for o in options if o.split() and len(o.split()[0]) == 1}
    stripped = text.strip()

    def as_letter(letter: str, after: str) -> str | None:
        """``letter`` as an option letter, given the text that follows it; None when it is a word or no option."""
        letter_up = letter.upper()
        following = re.match(r"\s+([a-z]\w*)", after)
        if letter_up not in valid or (letter.islower() and not re.match(r"\s*(?:[.):\],]|$)", after)):
            return None
        if following and (letter_up in words or (letter_up == "A" and following.group(1) not in _COPULAS)):
            return None
        return letter_up

    cues = [c for m in _ANSWER_CUE.finditer(stripped) if (c := as_letter(m.group(1), stripped[m.end(1):]))]
    if cues:
        return Choice(cues[-1], Parse.cue)
    if (m := re.match(r"([A-Za-z])\s*(?:[.):\]]|$)", stripped)) and (letter := as_letter(m.group(1), "")):
        return Choice(letter, Parse.leading)
    if (m := re.match(r"([A-Z])\s+(.+)", stripped, re.S)) and m.group(1) in valid and \
            _norm(m.group(2)).startswith(_norm(options[LETTERS.index(m.group(1))])):
        return Choice(m.group(1), Parse.leading)
    cues = [m.group(1) for m in _OPTION_CUE.finditer(stripped) if m.group(1) in valid]
    if cues:
        return Choice(cues[-1], Parse.cue)
    quoted = {m.group(1).upper() for m in re.finditer(r"\(\s*([A-Za-z])\s*\)", stripped)}
    if len(quoted) == 1 and (letter := quoted.pop()) in valid:
        return Choice(letter, Parse.parenthesised)
    said = _norm(stripped)
    named = [i for i, option in enumerate(options) if _norm(option) and re.search(
        rf"(?:^| ){re.escape(_norm(option))}(?: |$)", said)]
    if len(named) > 1:  # "a red car" also names option "car": keep the longest, if it contains the others
        longest = max(named, key=lambda i: len(_norm(options[i])))
        if all(_norm(options[i]) in _norm(options[longest]) for i in named):
            named = [longest]
    if len(named) == 1:
        return Choice(LETTERS[named[0]], Parse.option_text)
    lone = {letter for m in re.finditer(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])", stripped)
            if (letter := as_letter(m.group(1), stripped[m.end():]))}
    if len(lone) == 1:
        return Choice(lone.pop(), Parse.lone_letter)
    return Choice(None, Parse.unparsable)


class MultipleChoiceAccuracy(Metric):
    """Accuracy over every question, and per category (a question counts once in each of its categories, as
    LVBench's tags do). Empty and unparsable answers count as wrong and are counted apart, so a report can say how
    many there were. States are sums: correct under DDP as long as each question is updated on one rank once (the
    evaluation loop flags padding copies: pass ``keep``).

    Args:
        categories: every category name a question may carry (a question's unknown category is an error).
        kwargs: torchmetrics' ``Metric`` options (``sync_on_compute=False`` to score on one process of many).
    """

    full_state_update = False

    def __init__(self, categories: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.categories = list(categories)
        self._index = {name: i for i, name in enumerate(self.categories)}
        for name in ("correct", "total", "empty", "unparsable"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        size = len(self.categories)
        self.add_state("category_correct", default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("category_total", default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, choices: Sequence[Choice], answers: Sequence[str],
               categories: Sequence[Sequence[str]] | None = None, keep: Sequence[bool] | None = None) -> None:
        """``choices``: the read answers; ``answers``: the right letters; ``categories``: each question's tags."""
        tags = categories if categories is not None else [()] * len(choices)
        flags = keep if keep is not None else [True] * len(choices)
        for choice, answer, question_tags, kept in zip(choices, answers, tags, flags, strict=True):
            if not kept:
                continue
            unknown = [tag for tag in question_tags if tag not in self._index]
            if unknown:  # before anything is counted: a caught error leaves the states as they were
                raise ValueError(f"category {unknown[0]!r} is not one of {self.categories}")
            right = int(choice.letter is not None and choice.letter == answer.strip().upper())
            self.correct += right
            self.total += 1
            self.empty += int(choice.how == Parse.empty)
            self.unparsable += int(choice.how == Parse.unparsable)
            for tag in dict.fromkeys(question_tags):  # a tag listed twice still counts once
                self.category_correct[self._index[tag]] += right
                self.category_total[self._index[tag]] += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """``accuracy`` (0-1 over all questions), ``questions``, ``empty``, ``unparsable``, and ``accuracy/<tag>``
        for every category that had a question."""
        out = {"accuracy": self.correct.float() / self.total.clamp(min=1), "questions": self.total,
               "empty": self.empty, "unparsable": self.unparsable}
        for name, i in self._index.items():
            if self.category_total[i] > 0:
                out[f"accuracy/{name}"] = self.category_correct[i].float() / self.category_total[i]
        return out
