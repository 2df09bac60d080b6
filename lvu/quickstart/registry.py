"""The quickstarts ``lvu quickstart`` knows: one entry per method.

A video-LLM method on the host-LM layer registers its quickstart recipes here (one entry, run by the shared
pipeline in :mod:`lvu.quickstart.host_lm`); a method with its own pipeline names the function that runs it. Entries
name code by ``module:function`` so that ``lvu --help`` lists them without importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Quickstart:
    """One method's quickstart.

    Args:
        name: ``lvu quickstart NAME``.
        description: one line for ``lvu quickstart --help``.
        runner: ``module:function`` called as ``function(out, entry)``; it returns the summary it writes.
        stages: host-LM methods: their quickstart recipes, run in order, each starting from the previous one's
            checkpoint (``init.from``); the last one answers the val questions and is exported.
        stage_data: what each stage trains on: "videos" (synthetic captioned videos with conversations) or
            "images" (a frame of each with a question about it); default videos for every stage.
        host_family: host-LM methods: the tiny random host to build (lvu.models.vlm.tiny), or "composed" (a tiny
            vision encoder and LLM, composed with a new projector).
    """

    name: str
    description: str
    runner: str = "lvu.quickstart.host_lm:run_host_lm_quickstart"
    stages: tuple[str, ...] = ()
    stage_data: tuple[str, ...] = ()
    host_family: str = "qwen2_vl"

    @property
    def default_out(self) -> str:
        return "runs/quickstart" if self.name == "lvmae" else f"runs/quickstart-{self.name}"

    def run(self, out: Path, **options: Any) -> dict[str, Any]:
        module, function = self.runner.split(":")
        return getattr(importlib.import_module(module), function)(out, self, **options)


QUICKSTARTS: dict[str, Quickstart] = {entry.name: entry for entry in (
    Quickstart("lvmae", "embed clips with a tiny CLIP, pre-train LV-MAE, probe every label task",
               runner="lvu.quickstart.lvmae:run_quickstart"),
    Quickstart("linvt", "LinVT's two stages on a tiny host, answers, export",
               stages=("quickstart/linvt_align", "quickstart/linvt_instruct")),
    Quickstart("uniform", "the uniform-frames baseline (the host's own video path) with LoRA, answers, export",
               stages=("quickstart/uniform_instruct",), host_family="llava_onevision"),
    Quickstart("fila", "FiLA-Video's four stages on a tiny composed host (images, then merged videos), answers "
               "with scene selection, export",
               stages=("quickstart/fila_stage1", "quickstart/fila_stage2", "quickstart/fila_stage3",
                       "quickstart/fila_stage4"),
               stage_data=("images", "images", "images", "videos"), host_family="composed"),
    Quickstart("seal", "SEAL's tokens (SAM2 masks, detector + tracker), query-aware selection, answers scored as "
               "LVBench, and the grounding head, with tiny random models",
               runner="lvu.quickstart.seal:run_seal_quickstart"),
)}
