"""A loader decode/collate pair whose module notices interpreter teardown (for tests/test_process_exit.py).

Importing this module (as the loader's fork server does, to preload the decoder's module) creates an object whose
``__del__`` writes ``<pid>`` into ``$LVU_TEARDOWN_MARKS``: it runs when the interpreter tears its modules down, and
never after ``os._exit``.
"""

from __future__ import annotations

import os
from pathlib import Path


class _TeardownMark:
    def __del__(self) -> None:
        folder = os.environ.get("LVU_TEARDOWN_MARKS")
        if folder:
            (Path(folder) / f"teardown-{os.getpid()}").write_text("teardown ran")


_MARK = _TeardownMark()
if os.environ.get("LVU_TEARDOWN_MARKS"):  # proof that this process imported the probe at all
    (Path(os.environ["LVU_TEARDOWN_MARKS"]) / f"imported-{os.getpid()}").write_text("imported")


def decode(raw, rng):
    return {"__key__": raw["__key__"]}


def collate(samples):
    return [s["__key__"] for s in samples]
