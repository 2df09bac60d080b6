"""Runs lmms-eval's ``simple_evaluate`` with the ``lvu`` model (found through its entry point) on local tasks; run by
tests/test_lmms_plugin.py with the lmms-eval environment's Python (``make lmms-venv``). Prints one JSON object:
each task's reported metrics and its per-document responses.

    python lmms_run.py TASK_DIR TASKS MODEL_ARGS
"""

from __future__ import annotations

import json
import sys

from lmms_eval import evaluator
from lmms_eval.models import get_model_manifest
from lmms_eval.tasks import TaskManager


def main() -> None:
    task_dir, tasks, model_args = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    manifest = get_model_manifest("lvu")  # registered by lvu's entry point, not by lmms-eval itself
    out = evaluator.simple_evaluate(model="lvu", model_args=model_args, tasks=tasks, batch_size=1, device="cpu",
                                    task_manager=TaskManager(include_path=task_dir, include_defaults=False),
                                    log_samples=True, bootstrap_iters=0)
    samples = {task: [{"doc_id": s["doc_id"], "resps": s["resps"], "acc": s.get("acc")} for s in rows]
               for task, rows in out["samples"].items()}
    print(json.dumps({"manifest": manifest.simple_class_path, "results": out["results"], "samples": samples},
                     default=str))


if __name__ == "__main__":
    main()
