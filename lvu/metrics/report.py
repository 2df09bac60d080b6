"""Benchmark answers to scores, and scores to ``results.json`` and a Markdown table beside the papers' numbers.

Scoring runs over the *expected* questions (every question the benchmark's shards hold), not over the answers that
happen to be on disk: a question with no answer (a run cut short, a video that failed to decode) counts as wrong and
is reported as ``unanswered``, so no score can rise by losing questions. Every evaluation writes the same two files,
whatever produced the numbers (``lvu eval``, LV-MAE's probes), so that tables compare like for like.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lvu.metrics.choice import Choice, MultipleChoiceAccuracy, Parse
from lvu.metrics.grounding import TemporalGroundingRecall

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
COUNT_KEYS = ("questions", "queries", "unanswered", "failed", "empty", "unparsable", "no_window")


@dataclass
class Results:
    """One evaluation's scores: fractions (accuracy, recall) and counts, with the published numbers to compare."""

    title: str
    metrics: dict[str, float]
    headline: str = "accuracy"
    papers: dict[str, dict[str, float]] = field(default_factory=dict)  # in percent, as the papers print them
    details: dict[str, Any] = field(default_factory=dict)  # how it was run (checkpoint, mode, frames, ...)

    def write(self, folder: Path) -> tuple[Path, Path]:
        """``results.json`` and ``results.md`` in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"title": self.title, "headline": self.headline, "metrics": self.metrics, "papers": self.papers,
                   **self.details}
        json_path, md_path = folder / RESULTS_JSON, folder / RESULTS_MD
        json_path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        md_path.write_text(self.markdown() + "\n")
        return json_path, md_path

    def markdown(self) -> str:
        """A table: one row per metric (the headline first, counts last), ours and then each paper's column."""
        return markdown_table(self.title, self.metrics, self.papers, self.headline)


def is_count(key: str) -> bool:
    return key in COUNT_KEYS


def is_error(key: str) -> bool:
    """A regression error (``mse/...``): shown as it is, not as a percentage."""
    return key.startswith("mse")


def _cell(key: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if is_count(key):
        return f"{int(value)}"
    return f"{value:.3f}" if is_error(key) else f"{value:.1f}"


def markdown_table(title: str, metrics: Mapping[str, float], papers: Mapping[str, Mapping[str, float]],
                   headline: str) -> str:
    """Ours in percent (fractions x 100; counts and errors as they are), the papers' numbers as published."""
    scores = [k for k in metrics if not is_count(k)]
    order = list(dict.fromkeys([k for k in (headline, "accuracy") if k in scores] + sorted(scores)))
    order = [k for k in order if not is_error(k)] + [k for k in order if is_error(k)]
    order += [k for k in COUNT_KEYS if k in metrics]
    order += sorted({k for p in papers.values() for k in p} - set(order))
    header = ["metric", "ours", *papers]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in order:
        ours = metrics.get(key)
        ours_shown = ours if ours is None or is_count(key) or is_error(key) else ours * 100
        row = [key, _cell(key, ours_shown), *(_cell(key, p.get(key)) for p in papers.values())]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def category_means(metrics: Mapping[str, float]) -> dict[str, float]:
    """The mean of per-category accuracies, per axis: ``mean`` over categories without an axis prefix (MLVU's task
    types: its reported M-Avg), ``mean/<axis>`` over ``accuracy/<axis>/...`` (e.g. ``mean/task``)."""
    groups: dict[str, list[float]] = {}
    for key, value in metrics.items():
        if not key.startswith("accuracy/"):
            continue
        parts = key.split("/")
        groups.setdefault("mean" if len(parts) == 2 else f"mean/{parts[1]}", []).append(value)
    return {name: sum(values) / len(values) for name, values in sorted(groups.items())}


def score_multiple_choice(expected: Sequence[Mapping[str, Any]], answers: Mapping[str, Mapping[str, Any]]
                          ) -> dict[str, float]:
    """Accuracy overall, per category and per axis mean over ``expected`` questions (``{"uid", "answer",
    "categories"}``), reading each one's ``choice`` and ``parse`` from ``answers`` (by uid)."""
    categories = sorted({c for q in expected for c in q.get("categories", [])})
    metric = MultipleChoiceAccuracy(categories, sync_on_compute=False)  # the answers of every rank are read here
    unanswered = 0
    choices, truths, tags = [], [], []
    for question in expected:
        record = answers.get(question["uid"])
        if record is None:
            unanswered += 1
            choice = Choice(None, Parse.empty)
        else:
            choice = Choice(record.get("choice"), Parse(record.get("parse", Parse.unparsable.value)))
        choices.append(choice)
        truths.append(question["answer"])
        tags.append(question.get("categories", []))
    metric.update(choices, truths, tags)
    out = {k: float(v) for k, v in metric.compute().items()}
    out["empty"] -= unanswered  # the metric saw unanswered questions as empty answers; report them apart
    out["unanswered"] = float(unanswered)
    out["failed"] = float(_failed(expected, answers))
    return {**out, **category_means(out)}


def _failed(expected: Sequence[Mapping[str, Any]], answers: Mapping[str, Mapping[str, Any]]) -> int:
    """Questions whose video could not be read (recorded as such, wrong, not retried)."""
    return sum((answers.get(q["uid"]) or {}).get("parse") == Parse.failed.value for q in expected)


def score_grounding(expected: Sequence[Mapping[str, Any]], answers: Mapping[str, Mapping[str, Any]],
                    ks: Sequence[int] = (1, 5), thresholds: Sequence[float] = (0.3, 0.5)) -> dict[str, float]:
    """Recall@k at IoU over every ``expected`` query (``{"uid", "start_s", "end_s"}``); each answer's ``windows``
    (best first, seconds) are read from ``answers``; a query without answer or window is a miss."""
    metric = TemporalGroundingRecall(ks, thresholds, sync_on_compute=False)
    windows, targets, unanswered, no_window = [], [], 0, 0
    for query in expected:
        record = answers.get(query["uid"])
        unanswered += record is None
        found = (record or {}).get("windows") or []
        no_window += record is not None and not found
        windows.append(torch.tensor(found, dtype=torch.float32).reshape(-1, 2))
        targets.append([float(query["start_s"]), float(query["end_s"])])
    metric.update(windows, torch.tensor(targets, dtype=torch.float32).reshape(-1, 2))
    failed = _failed(expected, answers)  # their records have no window either: counted there, not as no_window
    return {**{k: float(v) for k, v in metric.compute().items()}, "queries": float(len(expected)),
            "unanswered": float(unanswered), "failed": float(failed), "no_window": float(no_window - failed)}


def read_jsonl(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every complete JSON line of ``paths``: a line counts once its newline is written (a last line without one
    was cut by a kill mid-write, even when it happens to parse, and the next writer cuts it away)."""
    records = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for line in text[:text.rfind("\n") + 1].splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
