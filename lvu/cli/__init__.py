"""The ``lvu`` command line: subcommands mapped to plain functions.

argparse (stdlib) rather than click/typer: every run command takes a recipe plus free-form ``key=value``
overrides, which those libraries handle no better, and argparse keeps ``lvu --help`` instant. Commands import the
library code they run (torch, Lightning, transformers behind it) inside their functions, for that reason.

Exit codes: 0 success, 1 a user error (one line on stderr; ``--debug`` adds the traceback), 2 bad usage,
130 interrupted, 75 a graceful stop on a signal (checkpoint saved; EX_TEMPFAIL: "resume later"). A process killed by
signal N is reported by the shell as 128 + N, so the two cannot be confused.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from lvu import __version__, early_signals
from lvu.cli.ckpt import add_ckpt_commands
from lvu.cli.common import Formatter, add_command, add_recipe_args
from lvu.cli.data import add_data_commands
from lvu.cli.slurm import add_slurm_commands
from lvu.config import available_recipes, explain, load_recipe, recipes_dir
from lvu.errors import LvuError, Preempted
from lvu.process_exit import exit_now
from lvu.quickstart.registry import QUICKSTARTS
from lvu.tasks.registry import available_tasks, get_task
from lvu.train.library_noise import quiet_library_noise
from lvu.train.rundir import global_rank

# Subcommand groups: ``lvu data ...``, ``lvu ckpt ...``. Each adds its commands to the parser it is given.
CommandGroup = Callable[[argparse._SubParsersAction], None]
COMMAND_GROUPS: dict[str, tuple[str, CommandGroup]] = {
    "data": ("data tools: synth, pack, inspect, concat, embed, index", add_data_commands),
    "ckpt": ("checkpoint tools: inspect, convert, universal, export", add_ckpt_commands),
    "slurm": ("Slurm jobs: submit", add_slurm_commands),
}


# ----------------------------------------------------------------------------------------------------------------
# Commands


def cmd_run(args: argparse.Namespace) -> int:
    from lvu.train.run import run  # Lightning and torch: see the module docstring

    if getattr(args, "video", None) or getattr(args, "question", None):
        return _predict_one(args)
    recipe = load_recipe(args.recipe, args.overrides, stage=args.stage)
    result = run(recipe, args.stage, ckpt=args.ckpt, predictions=getattr(args, "out", None))
    _print_result(result)
    return 0


def _predict_one(args: argparse.Namespace) -> int:
    """``lvu predict RECIPE --video V --question Q``: a one-sample shard, the usual predict run, the answer on
    stdout."""
    from lvu.data.pack import query_shard  # PyAV, Lightning and torch: see the module docstring
    from lvu.train.run import run  # (idem)

    if not (args.video and args.question):
        raise LvuError("--video and --question go together")
    if any(o.startswith("data.predict=") for o in args.overrides):
        raise LvuError("--video replaces data.predict; give one or the other")
    with tempfile.TemporaryDirectory(prefix="lvu-query-") as tmp:
        shard = query_shard(Path(args.video), args.question, Path(tmp) / "query")
        # One sample: one process (a multi-device preset would start ranks that each write their own file).
        recipe = load_recipe(args.recipe, [*args.overrides, f"data.predict={shard}", "trainer.devices=1"],
                             stage="predict")
        result = run(recipe, "predict", ckpt=args.ckpt, predictions=args.out)
    records = [json.loads(line) for line in result.predictions.read_text().splitlines() if line.strip()]
    for record in records:
        print(record.get("answer", record))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lvu.train.evaluate import evaluate  # Lightning and torch: see the module docstring

    outcome = evaluate(args.recipe, args.overrides, ckpt=args.ckpt)
    if outcome.results is not None:
        print(outcome.results.markdown())
        print(f"\nresults: {outcome.folder}/results.json, {outcome.folder}/results.md", file=sys.stderr)
    return 0


def _print_result(result) -> None:
    from rich.console import Console  # only after a run, which imported it anyway

    if global_rank() != 0:
        return
    console = Console(stderr=True)
    lines = [f"[bold green]{result.stage} finished[/] (step {result.global_step}) -> {result.run_dir}"]
    if result.predictions is not None:
        lines.append(f"predictions: {result.predictions}")
    for key, value in sorted(result.metrics.items()):
        lines.append(f"  {key}: {value:.6g}")
    console.print("\n".join(lines), highlight=False)


def cmd_config(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides, allow_missing=True)
    sys.stdout.write(explain(recipe) if args.explain else recipe.to_yaml())
    missing = recipe.missing_keys()
    if missing:
        print(f"lvu: note: still to be set before running: {', '.join(missing)}", file=sys.stderr)
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    entry = QUICKSTARTS[args.method]
    entry.run(Path(args.out or entry.default_out))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    print(f"# built-in recipes in {recipes_dir()}")
    for name in available_recipes():
        print(name)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    for name in available_tasks():
        print(f"{name:24s} {get_task(name).description}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Parser


_RUN_HELP = {
    "fit": ("train a recipe (resumes automatically when run_dir points at an existing run)",
            "lvu fit lvmae/pretrain data.train=shards/train trainer.max_steps=100"),
    "validate": ("evaluate on the validation split",
                 "lvu validate lvmae/probe_attentive data.val=feats/val probe.pretrained=PRE.ckpt "
                 "--ckpt runs/lvmae/probe_attentive/version_0"),
    "test": ("evaluate on the test split",
             "lvu test lvmae/probe_attentive data.test=feats/test probe.pretrained=PRE.ckpt "
             "--ckpt runs/lvmae/probe_attentive/version_0/checkpoints/last.ckpt"),
    "predict": ("write predictions as JSON lines",
                "lvu predict linvt/instruct host.path=HOST data.predict=shards/val --ckpt RUN --out answers.jsonl"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvu",
        description="Long-video understanding (LinVT, FiLA-Video, LV-MAE, SEAL) on one Lightning stack.",
        epilog="examples:\n  lvu config lvmae/pretrain\n  lvu fit lvmae/pretrain trainer=ddp trainer.devices=2\n"
        "Run `lvu COMMAND --help` for a command's options.",
        formatter_class=Formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--version", action="version", version=f"lvu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for stage, (help_text, example) in _RUN_HELP.items():
        sub = add_command(subparsers, stage, help_text, example)
        add_recipe_args(sub)
        sub.add_argument("--ckpt", help="checkpoint file, DeepSpeed checkpoint folder, or run directory")
        if stage == "predict":
            sub.add_argument("--out", help="JSON-lines output (default: <run_dir>/predictions.jsonl)")
            sub.add_argument("--video", help="answer a question about this one video (or image) file instead of "
                                             "the data.predict shards; the answer is printed")
            sub.add_argument("--question", help="the question to ask about --video")
        sub.set_defaults(func=cmd_run, stage=stage)

    sub = add_command(
        subparsers, "eval", "score a video-LLM on a benchmark (resumable; eval=NAME picks it)",
        "lvu eval linvt/instruct eval=videomme host.path=HOST data.predict=shards/videomme --ckpt RUN",
        description="Score a video-LLM checkpoint on a benchmark packed with `lvu data pack --format NAME`: every "
                    "question answered once across ranks, answers streamed to <folder>/answers/, rerun the same "
                    "command to resume. Writes results.json and results.md (with the papers' numbers) in the "
                    "folder: run_dir=, else <checkpoint's run>/eval/NAME. Benchmarks: eval=videomme, "
                    "videomme_subs, mlvu, longvideobench, lvbench, mvbench, egoschema, nextqa, perceptiontest, "
                    "ego4d_nlq; eval.mode=likelihood scores options instead of parsing text.")
    add_recipe_args(sub)
    sub.add_argument("--ckpt", help="checkpoint file, DeepSpeed checkpoint folder, or run directory")
    sub.set_defaults(func=cmd_eval)

    sub = add_command(subparsers, "config", "print the resolved recipe as YAML (--explain: every key described)",
                      "lvu config lvmae/pretrain trainer=ddp\n  lvu config linvt/instruct --explain")
    add_recipe_args(sub)
    sub.add_argument("--explain", action="store_true",
                     help="one line per resolved key: its value, type and what it does")
    sub.set_defaults(func=cmd_config)

    methods = "\n".join(f"  {name}: {entry.description}" for name, entry in QUICKSTARTS.items())
    sub = add_command(subparsers, "quickstart", "a whole method on synthetic videos on a CPU, in minutes",
                      "lvu quickstart --out runs/quickstart\n  lvu quickstart linvt",
                      description=f"A whole method on synthetic videos on a CPU, in minutes. Methods:\n{methods}")
    sub.add_argument("method", nargs="?", default="lvmae", choices=list(QUICKSTARTS),
                     help="which method (default lvmae)")
    sub.add_argument("--out", help="folder for everything it makes (default runs/quickstart-METHOD; "
                                   "runs/quickstart for lvmae)")
    sub.set_defaults(func=cmd_quickstart)

    sub = add_command(subparsers, "recipes", "list the built-in recipes", "lvu recipes")
    sub.set_defaults(func=cmd_recipes)
    sub = add_command(subparsers, "tasks", "list the registered tasks", "lvu tasks")
    sub.set_defaults(func=cmd_tasks)

    for name, (help_text, add_commands) in COMMAND_GROUPS.items():
        group = subparsers.add_parser(name, help=help_text, description=help_text, formatter_class=Formatter)
        group_sub = group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
        add_commands(group_sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides stand anywhere after the recipe (``--ckpt X a=1 b=2`` works)."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


# File-system failures a user fixes outside lvu (a read-only or full disk, a folder they may not write): one line.
FILE_SYSTEM_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if args.command in ("fit", "quickstart", "eval"):  # a scheduler's signal must not kill it while it loads
        early_signals.note_from_now()
    debug = getattr(args, "debug", False) or os.environ.get("LVU_DEBUG") == "1"
    quiet_library_noise()
    try:
        return int(args.func(args) or 0)
    except Preempted as exc:
        if global_rank() == 0:  # every rank stopped the same way; one line says it
            print(f"lvu: {exc}", file=sys.stderr)
        return exc.exit_code
    except LvuError as exc:
        if debug:
            traceback.print_exc()
        print(f"lvu: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lvu: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in FILE_SYSTEM_ERRNOS or debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"lvu: error: {exc.strerror.lower() if exc.strerror else exc}{where}", file=sys.stderr)
        return 1


def script_main() -> NoReturn:
    """The ``lvu`` command: ``main()`` on ``sys.argv``, then leave without the interpreter's teardown (seconds of
    garbage collection once the training stack is imported; see lvu.process_exit). An exception that escapes
    ``main`` takes the normal way out, traceback included."""
    exit_now(main())


if __name__ == "__main__":
    script_main()
