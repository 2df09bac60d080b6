"""What every quickstart shares: numbered progress lines, Lightning kept quiet, loss curves, a summary table."""

from __future__ import annotations

import contextlib
import csv
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table
from transformers.utils import logging as transformers_logging


def step_printer(console: Console, steps: int) -> Callable[[int, str], None]:
    """``step(n, text)`` prints "[n/steps] text (elapsed s)"."""
    start = time.perf_counter()

    def step(n: int, text: str) -> None:
        console.print(f"[bold cyan][{n}/{steps}][/] {text}  [dim]({time.perf_counter() - start:.0f} s)[/]")

    return step


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's per-run banners (devices, restored checkpoints) and transformers' loading bars would bury the
    quickstart's own progress lines."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lvu.data")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
        if bars:
            transformers_logging.enable_progress_bar()


def loss_curve(run_dir: Path, name: str = "train/loss") -> list[float]:
    """The logged values of ``name`` in a run's CSV log, in order."""
    with next((run_dir / "logs").rglob("metrics.csv")).open() as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]


def table(title: str, columns: list[str], rows: dict[str, list[str]]) -> Table:
    """A summary table: one row per name, cells as given (numeric columns right-aligned)."""
    out = Table(title=title)
    out.add_column(columns[0])
    for column in columns[1:]:
        out.add_column(column, justify="right")
    for name, cells in rows.items():
        out.add_row(name, *cells)
    return out
