"""Benchmark questions through a host-LM task: each video's questions asked in the benchmark's own prompt, answered by
greedy generation (the letter then read from the text) or by option likelihood, graded, one JSON record each.

Every question of a video is asked over that video alone, one video at a time, whatever the batch and the number of
ranks: a question's answer then depends only on its video and its prompt, so a 2-process evaluation scores exactly
as a 1-process one, and a resumed evaluation exactly as an uninterrupted one (batching videos together would pad
prompts differently with different neighbours). A video's questions share one generation call (and, when the method
ignores the question, one pass of the method over the video).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from lvu.data.benchmark_prompts import LETTERS, grounding_prompt, multiple_choice_prompt, subtitles_at
from lvu.data.unreadable import unreadable_videos
from lvu.errors import LvuError
from lvu.metrics.choice import Parse, extract_choice
from lvu.metrics.grounding import parse_window
from lvu.metrics.report import read_jsonl
from lvu.schema import AnswerMode, Benchmark, EvalConfig, LikelihoodTarget


class AsksVideos(Protocol):
    """What the answerer needs of a task (lvu.tasks.host_lm.module.HostLMTask provides it; a Protocol keeps this
    module below the module and the batch types, which use it)."""

    def ask(self, batch: Any, b: int, questions: list[str]) -> Any: ...

    def lockstep_count(self, count: int) -> int: ...

    def generate_answers(self, asked: Any, max_new_tokens: int) -> list[str]: ...

    def continuation_scores(self, asked: Any, continuations: list[list[str]]) -> list[Any]: ...


# Not frozen: Lightning's batch transfer rebuilds the dataclasses it finds in a batch, and refuses frozen ones.
@dataclass
class BenchmarkItem:
    """One question (multiple choice) or query (temporal grounding) of a video."""

    id: str  # "<sample key>/<uid>": unique across a benchmark, the key answers are stored and resumed by
    key: str  # the sample's
    text: str
    options: list[str]  # empty for a grounding query
    answer: str | None  # the right letter (multiple choice)
    categories: list[str]
    window: list[float] | None  # [start_s, end_s] (grounding)

    @property
    def is_choice(self) -> bool:
        return bool(self.options)


@dataclass
class BenchmarkSample:
    """What a video sample brings to an evaluation: its questions and, when packed with them, its subtitles."""

    items: list[BenchmarkItem]
    subtitles: list[dict[str, Any]] | None


def benchmark_items(key: str, annotation: dict[str, Any], grounding: bool) -> list[BenchmarkItem]:
    """A packed sample's grounding queries (``segments``; ``grounding``) or its multiple-choice questions (``mc``),
    in annotation order. Entries without a ``uid`` (synthetic videos) are numbered."""
    if grounding:
        return [BenchmarkItem(f"{key}/{s.get('uid', f'segment{n}')}", key, str(s["query"]), [], None, [],
                              [float(s["start_s"]), float(s["end_s"])])
                for n, s in enumerate(annotation.get("segments") or []) if s.get("query")]
    return [BenchmarkItem(f"{key}/{q.get('uid', n)}", key, str(q["question"]), list(q["options"]), str(q["answer"]),
                          list(q.get("categories") or []), None)
            for n, q in enumerate(annotation.get("mc") or [])]


def answer_files(folder: Path) -> list[Path]:
    """The answer files of an evaluation folder: one per rank of every attempt's world size, and the records of
    questions whose video could not be read (``answers-failed.jsonl``)."""
    return sorted(folder.glob("answers-*.jsonl")) if folder.is_dir() else []


def failed_videos(folder: Path) -> dict[str, str]:
    """Videos that could not be read in an earlier attempt, by sample key, with the reason (``failed-rank*.jsonl``,
    written by the answer writer as the loader skips them). They are not retried: their questions are recorded as
    failed (wrong, reported apart); delete those files to try them again."""
    return unreadable_videos(folder)


def failed_record(question: dict[str, Any], reason: str) -> dict[str, Any]:
    """The answer record of an expected question (:func:`expected_entry`) whose video could not be read."""
    base = {"uid": question["uid"], "key": question["key"], "prediction": None, "parse": Parse.failed.value,
            "error": reason}
    if "answer" in question:
        return {**base, "choice": None, "answer": question["answer"], "correct": False,
                "categories": question["categories"]}
    return {**base, "windows": [], "target": [question["start_s"], question["end_s"]]}


def answered(folder: Path) -> dict[str, dict[str, Any]]:
    """Every answer on disk by question id (the first, should a question ever appear twice)."""
    records: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(answer_files(folder)):
        records.setdefault(record["uid"], record)
    return records


class Unanswered:
    """``select`` predicate of the evaluation's shards: a video with at least one question not yet answered in
    ``folder``. The answers are read on the first call, which every rank makes before any rank writes (see
    lvu.train.evaluate.AnswerWriter)."""

    def __init__(self, folder: Path, grounding: bool) -> None:
        self.folder, self.grounding = folder, grounding
        self._done: set[str] | None = None
        self._failed: set[str] = set()

    def __call__(self, annotation: dict[str, Any]) -> bool:
        if self._done is None:
            self._done = set(answered(self.folder))
            self._failed = set(failed_videos(self.folder))
        if annotation["__key__"] in self._failed:
            return False
        items = benchmark_items(annotation["__key__"], annotation, self.grounding)
        return any(item.id not in self._done for item in items)


def expected_entry(item: BenchmarkItem) -> dict[str, Any]:
    """What the scorer needs of a question (lvu.metrics.report)."""
    if item.is_choice:
        return {"uid": item.id, "key": item.key, "answer": item.answer, "categories": item.categories}
    assert item.window is not None
    return {"uid": item.id, "key": item.key, "start_s": item.window[0], "end_s": item.window[1]}


def prompt_for(item: BenchmarkItem, benchmark: str, subtitles: str | None) -> str:
    if item.is_choice:
        return multiple_choice_prompt(benchmark, item.text, item.options, subtitles)
    return grounding_prompt(item.text)


def check_mode(cfg: EvalConfig) -> None:
    """Likelihood mode scores options: a grounding benchmark has none."""
    if cfg.mode == AnswerMode.likelihood and cfg.benchmark == Benchmark.ego4d_nlq:
        raise LvuError(f"eval.mode=likelihood scores the options of multiple-choice questions; {cfg.benchmark.value} "
                       f"asks for time windows: use eval.mode=generate")


class BenchmarkAnswerer:
    """Answers a batch's benchmark questions with a host-LM task (see the module docstring)."""

    def __init__(self, task: AsksVideos, cfg: EvalConfig) -> None:
        if cfg.benchmark is None:
            raise LvuError("eval.benchmark is not set: pick one with eval=NAME (e.g. eval=videomme)")
        check_mode(cfg)
        self.task, self.cfg = task, cfg
        self.benchmark = cfg.benchmark.value

    def __call__(self, batch: Any) -> list[dict[str, Any]]:
        assert batch.benchmark is not None
        records = []
        for b, sample in enumerate(batch.benchmark):
            if not sample.items:
                continue
            # Every sample is computed, padding copies included (ZeRO-3 needs every rank to run alike); the
            # copies' answers are dropped.
            answered = self._answer_video(batch, b, sample)
            if not bool(batch.pad[b]):
                records += answered
        return records

    def _answer_video(self, batch: Any, b: int, sample: BenchmarkSample) -> list[dict[str, Any]]:
        times = batch.timestamps[b][batch.frame_mask[b]].tolist()
        subtitles = subtitles_at(sample.subtitles or [], times) if self.cfg.subtitles else None
        size = max(1, self.cfg.questions_per_call)
        chunks = [sample.items[i:i + size] for i in range(0, len(sample.items), size)]
        records: list[dict[str, Any]] = []
        for call in range(self.task.lockstep_count(len(chunks))):
            chunk = chunks[min(call, len(chunks) - 1)]  # beyond this video's own: a throw-away call (ZeRO-3)
            answered = self._answer_chunk(batch, b, chunk, subtitles)
            if call < len(chunks):
                records += answered
        seen = [round(t, 3) for t in times]
        return [{**record, "frame_times": seen} for record in records]

    def _answer_chunk(self, batch: Any, b: int, items: list[BenchmarkItem], subtitles: str | None
                      ) -> list[dict[str, Any]]:
        prompts = [prompt_for(item, self.benchmark, subtitles) for item in items]
        asked = self.task.ask(batch, b, prompts)
        key = batch.keys[b]
        if self.cfg.mode == AnswerMode.likelihood:
            continuations = [self._continuations(item) for item in items]
            scores = [scored.logprobs for scored in self.task.continuation_scores(asked, continuations)]
            records = [self._likelihood_record(key, item, row) for item, row in zip(items, scores, strict=True)]
        else:
            texts = self.task.generate_answers(asked, self.cfg.max_new_tokens)
            records = [self._generated_record(key, item, text) for item, text in zip(items, texts, strict=True)]
        return [{**record, "prompt": prompt} for record, prompt in zip(records, prompts, strict=True)]

    def _continuations(self, item: BenchmarkItem) -> list[str]:
        letters = LETTERS[: len(item.options)]
        if self.cfg.likelihood_target == LikelihoodTarget.letter:
            return list(letters)
        return [f"{letter}. {option}" for letter, option in zip(letters, item.options, strict=True)]

    @staticmethod
    def _base(key: str, item: BenchmarkItem) -> dict[str, Any]:
        return {"uid": item.id, "key": key, "question": item.text}

    def _generated_record(self, key: str, item: BenchmarkItem, text: str) -> dict[str, Any]:
        text = text.strip()
        if not item.is_choice:
            window = parse_window(text)
            return {**self._base(key, item), "prediction": text, "windows": [list(window)] if window else [],
                    "target": item.window}
        choice = extract_choice(text, item.options)
        return {**self._base(key, item), "options": item.options, "prediction": text, "choice": choice.letter,
                "parse": choice.how.value, "answer": item.answer, "correct": choice.letter == item.answer,
                "categories": item.categories}

    def _likelihood_record(self, key: str, item: BenchmarkItem, logprobs: torch.Tensor) -> dict[str, Any]:
        letter = LETTERS[int(torch.argmax(logprobs))]
        return {**self._base(key, item), "options": item.options, "prediction": None, "choice": letter,
                "parse": Parse.likelihood.value, "logprobs": [round(float(v), 6) for v in logprobs],
                "answer": item.answer, "correct": letter == item.answer, "categories": item.categories}
