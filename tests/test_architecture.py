"""The package's shape: layered imports without cycles, function-local imports only with a reason, recipe keys that
explain themselves, and a new method that needs no edit outside its own files."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from lvu.cli import main
from lvu.config import available_recipes, field_docs, load_recipe
from lvu.tasks.registry import available_tasks, get_task

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """pyproject.toml's import-linter contracts: cli > quickstart > train > config > tasks > data | metrics | ckpt >
    models > schema > errors, and no import cycle between the modules of any package."""
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_function_local_imports_say_why():
    """Imports inside functions (kept there so that `lvu --help` stays instant, or for a library that takes seconds
    to import) carry a comment on their line or the line above."""
    bare = []
    for path in sorted((ROOT / "lvu").rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    here, above = lines[sub.lineno - 1], lines[sub.lineno - 2]
                    if "#" not in here and not above.strip().startswith("#"):
                        bare.append(f"{path.relative_to(ROOT)}:{sub.lineno}: {here.strip()}")
    assert not bare, "function-local imports without a reason:\n" + "\n".join(bare)


def _schema_fields(schema: type, prefix: str = "") -> list[tuple[str, type, str]]:
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        nested = next((a for a in inner if isinstance(a, type) and dataclasses.is_dataclass(a)), None)
        out.append((f"{prefix}{f.name}", schema, f.name))
        if nested is not None:
            out += _schema_fields(nested, f"{prefix}{f.name}.")
    return out


@pytest.mark.parametrize("task", [t for t in available_tasks() if not t.startswith("test.")])
def test_every_recipe_key_of_every_task_is_described(task):
    undocumented = [key for key, schema, name in _schema_fields(get_task(task).config_class)
                    if not field_docs(schema).get(name)]
    assert not undocumented, f"{task}: fields without a description: {undocumented}"


def test_config_explain_describes_every_resolved_key(capsys):
    assert main(["config", "linvt/instruct", "--explain"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert all(" = " in line and "  # " in line and "(no description)" not in line for line in out)
    keys = {line.split(" = ", 1)[0] for line in out}
    assert {"init.from", "parts.llm.mode", "lora.r", "model.top_k", "data.target", "trainer.max_steps"} <= keys
    line = next(line for line in out if line.startswith("parts.llm.mode = "))
    assert line.startswith("parts.llm.mode = lora ") and "one of frozen, full, lora" in line


def test_keyword_recipe_keys_read_write_and_error_by_their_recipe_names(capsys, tmp_path):
    """`init.from` is the dataclass field `from_`: recipes, overrides, printed configs and errors use `from`."""
    recipe = load_recipe("linvt/instruct", ["host.path=h", "data.train=t", "init.from=stage1.ckpt"])
    assert recipe.to_object().init.from_ == "stage1.ckpt"
    assert recipe.to_container()["init"]["from"] == "stage1.ckpt" and "init:\n  from: stage1.ckpt" in recipe.to_yaml()
    saved = tmp_path / "config.yaml"
    saved.write_text(recipe.to_yaml())
    assert load_recipe(saved).to_object().init.from_ == "stage1.ckpt"
    assert main(["config", "linvt/instruct", "init.fromm=x"]) == 1
    assert "unknown key 'init.fromm' in 'init' (did you mean 'init.from'?)" in capsys.readouterr().err
    assert main(["config", "linvt/instruct", "init.from=[1,2]"]) == 1
    assert "init.from: expected str or null" in capsys.readouterr().err


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_a_method_is_its_own_files_and_one_quickstart_entry():
    """The task registry finds a method's task file by its name (no table of methods to edit), nothing imports a
    method's task file, and the quickstart registry holds one entry per method: the baseline method (uniform) is its
    task file, its recipes and that entry."""
    assert {"linvt", "uniform", "lvmae.pretrain", "lvmae.probe"} <= set(available_tasks())
    tree = ast.parse((ROOT / "lvu" / "tasks" / "registry.py").read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and id(n) not in docstrings]
    assert not [s for s in strings if s.startswith(("linvt", "uniform", "lvmae"))]
    importers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "lvu").rglob("*.py")
                 if {"lvu.tasks.uniform", "lvu.tasks.linvt"} & _imports(p)]
    assert importers == []
    assert {r.split("/")[0] for r in available_recipes()} >= {"linvt", "uniform", "lvmae"}
    from lvu.quickstart.registry import QUICKSTARTS

    assert QUICKSTARTS["uniform"].stages == ("quickstart/uniform_instruct",)
    assert set(QUICKSTARTS) == {"lvmae", "linvt", "uniform", "fila", "seal"}
