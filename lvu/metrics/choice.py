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
    empty = "empty"
    unparsable = "unparsable"


@dataclass(frozen=True)
class Choice:
    letter: str | None  # "A", "B", ... (None: empty or unparsable)
    how: Parse


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def extract_choice(text: str | None, options: Sequence[str]) -> Choice:
    """The option letter a free-text answer gives among ``options`` (their texts, in letter order).

    Rules, first match wins: a parenthesised letter; a letter opening the answer followed by punctuation, the end, or
    that option's own text; a letter after a cue ("answer is", "answer:", "option", "choice"), lower case only when
    punctuation or the end follows it (so "the answer is a dog" is not A); the text of exactly one option; one
    distinct option letter standing alone, where "A" followed by a lower-case word is the article and "I" a pronoun
    when it is not an option. A letter beyond the options is not a choice."""
    if text is None or not text.strip():
        return Choice(None, Parse.empty)
    valid = LETTERS[: len(options)]
    stripped = text.strip()

    def ok(letter: str) -> str | None:
        letter = letter.upper()
        return letter if letter in valid else None

    if (m := re.search(r"\(\s*([A-Za-z])\s*\)", stripped)) and (letter := ok(m.group(1))):
        return Choice(letter, Parse.parenthesised)
    if (m := re.match(r"([A-Za-z])\s*(?:[.):\]]|$)", stripped)) and (letter := ok(m.group(1))):
        return Choice(letter, Parse.leading)
    if (m := re.match(r"([A-Z])\s+(.+)", stripped)) and (letter := ok(m.group(1))) and \
            _norm(m.group(2)).startswith(_norm(options[LETTERS.index(letter)])):
        return Choice(letter, Parse.leading)
    cue = r"(?:answer\s*(?:is|:)?|option|choice)\s*[:\-]?\s*\(?\s*"
    for m in re.finditer(cue + r"([A-Za-z])(?=([^A-Za-z]|$))", stripped, flags=re.IGNORECASE):
        letter, after = m.group(1), stripped[m.end(1):]
        if (letter.isupper() or re.match(r"\s*(?:[.):\]]|$)", after)) and (chosen := ok(letter)):
            return Choice(chosen, Parse.cue)
    said = _norm(stripped)
    named = [i for i, option in enumerate(options) if _norm(option) and re.search(
        rf"(?:^| ){re.escape(_norm(option))}(?: |$)", said)]
    if len(named) > 1:  # "a red car" also names option "car": keep the longest, if it contains the others
        longest = max(named, key=lambda i: len(_norm(options[i])))
        if all(_norm(options[i]) in _norm(options[longest]) for i in named):
            named = [longest]
    if len(named) == 1:
        return Choice(LETTERS[named[0]], Parse.option_text)
    lone = set()
    for m in re.finditer(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])", stripped):
        letter, after = m.group(1), stripped[m.end():]
        if letter == "A" and re.match(r"\s+[a-z]", after):
            continue  # the article
        if letter in valid:
            lone.add(letter)
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
    """

    full_state_update = False

    def __init__(self, categories: Sequence[str] = ()) -> None:
        super().__init__()
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
            right = int(choice.letter is not None and choice.letter == answer.strip().upper())
            self.correct += right
            self.total += 1
            self.empty += int(choice.how == Parse.empty)
            self.unparsable += int(choice.how == Parse.unparsable)
            for tag in dict.fromkeys(question_tags):  # a tag listed twice still counts once
                if tag not in self._index:
                    raise ValueError(f"category {tag!r} is not one of {self.categories}")
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
