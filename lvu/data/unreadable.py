"""The videos a prediction run could not read, recorded per rank as the loader meets them (``failed-rank<R>.jsonl``:
one ``{"key", "reason"}`` line each), so that a resumed run does not try them again. ``lvu eval`` and SEAL's
prediction stages share it; each reads the records back with :func:`unreadable_videos`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FAILED_GLOB = "failed-rank*.jsonl"


def drop_cut_line(path: Path) -> None:
    """A kill mid-write leaves a last line without its newline: cut it, or the next record appended would join it."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def complete_lines(path: Path) -> list[str]:
    """The lines of ``path`` whose newline was written (a last line without one was cut by a kill)."""
    text = path.read_text(encoding="utf-8")
    return text[:text.rfind("\n") + 1].splitlines()


class UnreadableLog:
    """This rank's record of unreadable videos in ``folder``: :meth:`record` appends the loader's bad samples not
    yet written (the loader lists each once per pass, in ``bad_samples``)."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = folder / f"failed-rank{rank}.jsonl"
        drop_cut_line(self.path)
        self._reported = 0

    def record(self, bad_samples: Sequence[Any]) -> None:
        if len(bad_samples) <= self._reported:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            for skip in bad_samples[self._reported:]:
                handle.write(json.dumps({"key": skip.key, "reason": f"{skip.reason}: {skip.message}"}) + "\n")
        self._reported = len(bad_samples)


def unreadable_videos(folder: Path) -> dict[str, str]:
    """Every video recorded as unreadable in ``folder`` (any rank, any attempt), by key, with the reason."""
    found: dict[str, str] = {}
    for path in sorted(folder.glob(FAILED_GLOB)) if folder.is_dir() else []:
        for line in complete_lines(path):
            record = json.loads(line)
            found[record["key"]] = record["reason"]
    return found
