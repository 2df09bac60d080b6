"""``lvu eval``: a video-LLM checkpoint scored on a benchmark, resumable, exactly once per question across ranks.

The evaluation is a prediction run of the recipe with a benchmark (``eval=NAME``) over its packed shards:

* answers stream to ``<folder>/answers/answers-rank<R>.jsonl`` as each batch is done (flushed), so a killed or
  preempted evaluation loses at most the batches in flight;
* a rerun of the same command finds the same folder, leaves out the videos whose questions are all answered, and
  answers the rest; a question already on disk is never written twice;
* every rank reads the answers on disk before any rank writes (the writer waits at a barrier), so all ranks plan
  over the same videos: each is answered by exactly one rank, and the loader's padding copies are never scored;
* scoring reads the questions from the shards, not from the answers: a question nobody answered counts as wrong
  and is reported (``unanswered``);
* the folder records the checkpoint and the settings that change answers; a rerun with others is refused, so answers
  of two models never mix.

The folder: ``run_dir=`` when given; else ``<the checkpoint's run>/eval/<benchmark>[-subs][-likelihood]`` when the
checkpoint lies in a run directory; else ``<runs_root>/<name>/eval/<benchmark>...``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from lvu.config import Recipe, load_recipe
from lvu.data.datamodule import split_sources
from lvu.data.loader import SampleSet
from lvu.data.shards import resolve_shards
from lvu.data.unreadable import UnreadableLog, drop_cut_line
from lvu.errors import LvuError
from lvu.metrics.report import Results, score_grounding, score_multiple_choice
from lvu.schema import AnswerMode, Benchmark
from lvu.tasks.host_lm.batch import answers_folder
from lvu.tasks.host_lm.evaluation import (
    answered,
    benchmark_items,
    check_mode,
    expected_entry,
    failed_record,
    failed_videos,
)
from lvu.train.run import resolve_ckpt, run
from lvu.train.rundir import CONFIG_FILE, global_rank
from lvu.train.runlock import run_lock

IDENTITY_FILE = "evaluation.json"
ANSWERS_FILE = "answers.jsonl"  # every answer, in the benchmark's question order (written after scoring)
# Settings that do not change an answer: an evaluation may resume with other values of these (the trainer's too,
# except its precision and accelerator, which change the numbers: see identity()).
RUNTIME_KEYS = ("trainer", "run_dir", "runs_root", "name", "data.num_workers", "data.prefetch_factor",
                "data.pin_memory", "data.shard_cache", "data.batch_size", "data.eval_batch_size", "data.train",
                "data.val", "data.test", "data.strict", "eval.papers", "eval.headline")
NUMERICS_KEYS = ("precision", "accelerator")


class AnswerWriter(BasePredictionWriter):
    """Appends each batch's answer records to this rank's file, skipping questions already answered on disk."""

    def __init__(self, folder: Path) -> None:
        super().__init__(write_interval="batch")
        self.folder = folder
        self._done: set[str] = set()
        self._handle = None
        self._unreadable: UnreadableLog | None = None  # this rank's, set when prediction starts

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._done = set(answered(self.folder))
        # Every rank has planned its videos from the answers on disk (the loader was set up before this hook);
        # nobody writes until all have, or a fast rank's answers would change a slow rank's plan.
        trainer.strategy.barrier("lvu-eval-planned")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"answers-rank{trainer.global_rank}.jsonl"
        drop_cut_line(path)
        self._handle = path.open("a", encoding="utf-8")
        self._unreadable = UnreadableLog(self.folder, trainer.global_rank)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        assert self._handle is not None
        for record in prediction or []:
            if record["uid"] in self._done:
                continue
            self._done.add(record["uid"])
            self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        # Videos the loader could not read (it answered a stand-in, dropped as padding): recorded at once, so that a
        # resumed evaluation does not try them again (a rerun of nothing but unreadable videos could not even start).
        assert self._unreadable is not None
        self._unreadable.record(getattr(trainer.predict_dataloaders, "bad_samples", []))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None
        trainer.strategy.barrier("lvu-eval-written")  # rank 0 scores once every rank's file is complete


@dataclass
class EvalOutcome:
    folder: Path
    results: Results | None  # None on ranks other than 0
    answered_now: bool  # False when every question was already answered (only scored)


def _run_dir_of(checkpoint: Path) -> Path | None:
    for folder in (checkpoint, *checkpoint.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    return None


def eval_folder(cfg: Any, ckpt: str | None) -> Path:
    """Where an evaluation writes (see the module docstring)."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    name = cfg.eval.benchmark.value + ("-subs" if cfg.eval.subtitles else "") + \
        ("-likelihood" if cfg.eval.mode == AnswerMode.likelihood else "")
    home = _run_dir_of(Path(ckpt).resolve()) if ckpt else None
    return (home if home is not None else Path(cfg.runs_root) / cfg.name) / "eval" / name


def _drop(tree: dict[str, Any], dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if rest and isinstance(tree.get(head), dict):
        _drop(tree[head], rest)
    elif not rest:
        tree.pop(head, None)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def identity(recipe: Recipe, ckpt: Path | None) -> dict[str, Any]:
    """What the answers depend on: the checkpoint (path, size and time of a file) and the recipe's settings other
    than :data:`RUNTIME_KEYS`."""
    settings = recipe.to_container()
    numerics = {key: settings["trainer"][key] for key in NUMERICS_KEYS}
    for key in RUNTIME_KEYS:
        _drop(settings, key)
    settings["trainer"] = numerics
    found: dict[str, Any] = {"checkpoint": str(ckpt.resolve()) if ckpt else None}
    if ckpt is not None:  # a file, or a DeepSpeed folder that a training run may still be rewriting
        files = [ckpt] if ckpt.is_file() else [f for f in ckpt.rglob("*") if f.is_file()]
        stats = [f.stat() for f in files]
        found.update(checkpoint_bytes=sum(st.st_size for st in stats),
                     checkpoint_mtime=int(max((st.st_mtime for st in stats), default=0)))
    return {**found, "settings": _flat(settings)}


def check_identity(folder: Path, found: dict[str, Any]) -> None:
    """Refuse to add answers of another model or setting to ``folder``; record ``found`` on a first start."""
    path = folder / IDENTITY_FILE
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return
    before = json.loads(path.read_text())
    changed = [k for k in ("checkpoint", "checkpoint_bytes", "checkpoint_mtime") if before.get(k) != found.get(k)]
    old, new = before.get("settings", {}), found["settings"]
    changed += sorted(k for k in {*old, *new} if old.get(k, "<unset>") != new.get(k, "<unset>"))
    if changed:
        lines = "; ".join(f"{k}: {_show(before, k)} -> {_show(found, k)}" for k in changed)
        raise LvuError(f"{folder} holds answers of another evaluation ({lines}). Give run_dir=NEW_FOLDER to "
                       f"evaluate this one, or delete {folder} to start over")


def _show(record: dict[str, Any], key: str) -> Any:
    return record[key] if key in record else record.get("settings", {}).get(key, "<unset>")


def expected_questions(cfg: Any) -> list[dict[str, Any]]:
    """Every question (or grounding query) the data.predict shards hold, in shard order."""
    grounding = cfg.eval.benchmark == Benchmark.ego4d_nlq
    sources = split_sources(cfg.data, "predict")
    if sources is None:
        raise LvuError("data.predict is not set: give the benchmark's shards (lvu data pack --format "
                       f"{cfg.eval.benchmark.value} ...)")
    found: list[dict[str, Any]] = []
    unsubtitled: list[str] = []

    def collect(annotation: dict[str, Any]) -> bool:
        found.extend(expected_entry(item) for item in benchmark_items(annotation["__key__"], annotation, grounding))
        if "subtitles" not in annotation:
            unsubtitled.append(annotation["__key__"])
        return False

    SampleSet(resolve_shards(sources, cfg.data.shard_cache)).select(collect)
    if cfg.eval.subtitles and unsubtitled:
        raise LvuError(f"eval.subtitles=true, but {len(unsubtitled)} video(s) of data.predict have no subtitles in "
                       f"their annotation (e.g. {unsubtitled[0]}): pack the shards with --subtitles DIR (a video "
                       f"without a subtitle file then gets an empty list)")
    if not found:
        kind = "grounding queries ('segments')" if grounding else "multiple-choice questions ('mc')"
        raise LvuError(f"data.predict ({', '.join(sources)}) holds no {kind}: were these shards packed with "
                       f"`lvu data pack --format {cfg.eval.benchmark.value}`?")
    return found


def score(cfg: Any, folder: Path, expected: list[dict[str, Any]], ckpt: Path | None, recipe_name: str) -> Results:
    """Scores of the answers in ``folder`` over ``expected``; writes results.json, results.md and answers.jsonl."""
    answers = record_failures(answers_folder(folder), expected)
    grounding = cfg.eval.benchmark == Benchmark.ego4d_nlq
    # A video-LLM gives one window per query: its R@5 would only repeat R@1 beside papers' ranked windows.
    metrics = score_grounding(expected, answers, ks=(1,)) if grounding else score_multiple_choice(expected, answers)
    benchmark = cfg.eval.benchmark.value + (" (with subtitles)" if cfg.eval.subtitles else "")
    headline = "R@1,IoU=0.3" if grounding and cfg.eval.headline == "accuracy" else cfg.eval.headline
    results = Results(
        title=f"{benchmark}: {recipe_name}", metrics=metrics, headline=headline,
        papers={k: dict(v) for k, v in cfg.eval.papers.items()},
        details={"benchmark": cfg.eval.benchmark.value, "mode": cfg.eval.mode.value,
                 "subtitles": cfg.eval.subtitles, "frames": cfg.data.eval_frames,
                 "checkpoint": str(ckpt) if ckpt else None, "answers": str(folder / ANSWERS_FILE)})
    results.write(folder)
    with (folder / ANSWERS_FILE).open("w", encoding="utf-8") as out:
        for question in expected:
            if question["uid"] in answers:
                out.write(json.dumps(answers[question["uid"]]) + "\n")
    return results


def record_failures(answers: Path, expected: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every answer by question id, after writing a ``failed`` record (to ``answers-failed.jsonl``) for each question
    of a video the loader could not read."""
    done = answered(answers)
    failed = failed_videos(answers)
    stubs = [failed_record(q, failed[q["key"]]) for q in expected if q["uid"] not in done and q["key"] in failed]
    if stubs:
        with (answers / "answers-failed.jsonl").open("a", encoding="utf-8") as out:
            out.writelines(json.dumps(stub) + "\n" for stub in stubs)
        done |= {stub["uid"]: stub for stub in stubs}
    return done


def evaluate(recipe_ref: str, overrides: list[str], ckpt: str | None = None, verbose: bool = True) -> EvalOutcome:
    """Run (or resume) an evaluation and score it (see the module docstring)."""
    recipe = load_recipe(recipe_ref, overrides, stage="predict")
    cfg = recipe.to_object()
    if not hasattr(cfg, "eval"):
        raise LvuError(f"{recipe.name} (task {cfg.task}) is not a video-LLM recipe: lvu eval scores video-LLMs "
                       f"(LV-MAE's probes write their results with `lvu fit`/`lvu test`)")
    if cfg.eval.benchmark is None:
        raise LvuError("no benchmark chosen: add eval=NAME (one of "
                       f"{', '.join(b.value for b in Benchmark)}; presets in recipes/eval/)")
    check_mode(cfg.eval)
    ckpt_path = resolve_ckpt(ckpt, "predict")
    folder = eval_folder(cfg, ckpt)
    recipe = load_recipe(recipe_ref, [*overrides, f"run_dir={folder}"], stage="predict")
    cfg = recipe.to_object()
    with run_lock(folder):
        if global_rank() == 0:
            check_identity(folder, identity(recipe, ckpt_path))
        expected = expected_questions(cfg)
        done, failed = answered(answers_folder(folder)), failed_videos(answers_folder(folder))
        left = sum(q["uid"] not in done and q["key"] not in failed for q in expected)
        if left:
            rank_zero_info(f"{cfg.eval.benchmark.value}: {len(expected)} questions, {len(expected) - left} answered "
                           f"already in {folder}, {left} to answer")
            run(recipe, "predict", ckpt=ckpt, verbose=verbose, callbacks=[AnswerWriter(answers_folder(folder))])
        else:
            rank_zero_info(f"{cfg.eval.benchmark.value}: all {len(expected)} questions answered in {folder}; scoring")
        results = score(cfg, folder, expected, ckpt_path, recipe.name) if global_rank() == 0 else None
    return EvalOutcome(folder, results, bool(left))
