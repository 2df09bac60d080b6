"""The `lvu` command: help, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lvu.cli import build_parser, main

LVU = str(Path(sys.executable).parent / "lvu")


def lvu(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LVU, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _subcommands(parser) -> dict:
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


HEAVY_MODULES = ("torch", "lightning", "transformers", "deepspeed", "av", "numpy", "peft")


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["data", "inspect", "--help"], ["ckpt", "--help"],
                                  ["slurm", "submit", "--help"], ["config", "--help"]])
def test_help_imports_none_of_the_training_stack(argv):
    """`lvu --help` took 12-53 s on a loaded machine when building the parser imported Lightning: help imports
    only the standard library, omegaconf and lvu's own light modules (benchmarks/bench_cli.py times it)."""
    code = (f"import sys\nfrom lvu.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_help_lists_every_command():
    result = lvu("--help")
    assert result.returncode == 0
    for command in ("fit", "validate", "test", "predict", "config", "recipes", "tasks", "ckpt"):
        assert f"    {command} " in result.stdout


def test_every_command_help_has_an_example(capsys):
    parser = build_parser()
    leaves = []
    for name, sub in _subcommands(parser).items():
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        leaves += [[name, child] for child in _subcommands(sub)] if nested else [[name]]
    assert {"fit", "validate", "test", "predict", "config", "ckpt inspect"} <= {" ".join(a) for a in leaves}
    for argv in leaves:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--help"])
        assert exit_info.value.code == 0
        assert "example:\n  lvu " in capsys.readouterr().out, argv


def test_user_error_is_one_line_with_exit_code_1_and_debug_shows_traceback(tmp_path):
    result = lvu("config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert result.stderr.startswith("lvu: error: recipe ") and "not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    debug = lvu("--debug", "config", str(tmp_path / "nope.yaml"))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_yaml_syntax_error_from_the_command_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: x\ntrainer: {max_steps: 3\n")
    result = lvu("fit", str(bad))
    assert result.returncode == 1
    assert f"lvu: error: {bad}:3:1: YAML syntax error" in result.stderr


def test_usage_errors_exit_2():
    assert lvu("frobnicate").returncode == 2
    assert lvu("fit").returncode == 2  # no recipe
    assert lvu("config", "r.yaml", "--bogus").returncode == 2


def test_config_prints_resolved_yaml_and_overrides_anywhere(capsys, recipe_path):
    assert main(["config", recipe_path("tiny"), "data.batch_size=3", "trainer=ddp"]) == 0
    out = capsys.readouterr().out
    assert "task: test.tiny" in out and "batch_size: 3" in out and "name: ddp" in out
    assert main(["config", recipe_path("tiny"), "trainer.max_stepz=1"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("lvu: error: unknown key 'trainer.max_stepz' in 'trainer' "
                           "(did you mean 'trainer.max_steps'?)")


def test_config_shows_missing_values_and_fit_refuses_them(capsys, recipe_path, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(Path(recipe_path("tiny")).read_text().replace("  name: random-linear\n", ""))
    assert main(["config", str(recipe)]) == 0
    captured = capsys.readouterr()
    assert "name: ???" in captured.out and "still to be set before running: data.name" in captured.err
    assert main(["fit", str(recipe), f"runs_root={tmp_path}"]) == 1
    assert "missing required value (???): data.name" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing was computed or written


def test_listing_and_checkpoint_errors(capsys, tmp_path):
    assert main(["tasks"]) == 0 and "test.tiny" in capsys.readouterr().out
    assert main(["recipes"]) == 0
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["ckpt", "inspect", str(junk)]) == 1
    assert "is not a PyTorch checkpoint lvu can read" in capsys.readouterr().err
    assert main(["fit", "whatever.yaml", "--ckpt", str(tmp_path / "none.ckpt")]) == 1


def test_ckpt_inspect_reports_the_run(capsys, tmp_path, recipe_path):
    assert main(["fit", recipe_path("tiny"), f"run_dir={tmp_path / 'run'}", "trainer.max_steps=2"]) == 0
    capsys.readouterr()
    assert main(["ckpt", "inspect", str(tmp_path / "run" / "checkpoints" / "last.ckpt")]) == 0
    out = capsys.readouterr().out
    for expected in ("global_step          2", "task                 test.tiny", "world_size           1",
                     "strategy             SingleDeviceStrategy", "config_digest"):
        assert expected in out


def _examples(parser) -> list[str]:
    """Every example line of the parser's and its subcommands' help texts."""
    import argparse

    lines = [line.strip() for line in (parser.epilog or "").splitlines() if line.strip().startswith("lvu ")]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                lines += _examples(sub)
    return lines


def test_every_recipe_named_in_help_and_readme_examples_exists():
    """Help examples used to name a recipe that did not exist (lvmae/probe)."""
    import re
    from pathlib import Path

    from lvu.cli import build_parser
    from lvu.config import find_recipe

    root = Path(__file__).resolve().parents[1]
    texts = _examples(build_parser())
    assert len(texts) > 20
    for doc in [root / "README.md", *root.glob("data/**/README.md"), root / "benchmarks" / "README.md"]:
        texts += [line for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S)
                  for line in block.splitlines()]
    named = {m.group(2) for t in texts
             for m in re.finditer(r"lvu (fit|validate|test|predict|config|slurm submit) ([\w./-]+)", t)}
    named = {n for n in named if not n.isupper() and not n.startswith(("-", "."))}  # placeholders (RECIPE, ...)
    assert {"lvmae/pretrain", "lvmae/probe_attentive", "linvt/instruct"} <= named
    missing = []
    for name in sorted(named):
        try:
            find_recipe(name)
        except Exception as exc:  # collect every one
            missing.append(f"{name}: {exc}")
    assert not missing, missing
