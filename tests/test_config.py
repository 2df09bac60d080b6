"""Recipe loading: includes, presets, interpolation, overrides, and every user error with its message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lvu.config import load_recipe
from lvu.errors import ConfigError
from lvu.schema import Precision, StrategyName


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


BASE = """\
task: test.tiny
seed: 3
data:
  name: random-linear
  samples: 32
  batch_size: 4
"""


def test_string_include_and_preset_group_merge_under_the_recipe(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    recipe = write(tmp_path, "child.yaml", """\
        defaults:
          - base
          - trainer: ddp
        data:
          batch_size: 16
        trainer:
          max_steps: 5
        """)
    r = load_recipe(recipe)
    cfg = r.to_object()
    assert cfg.seed == 3 and cfg.data.samples == 32  # from the include
    assert cfg.data.batch_size == 16  # the recipe wins over what it includes
    assert cfg.trainer.strategy.name == StrategyName.ddp  # the preset, merged into `trainer`
    assert cfg.trainer.max_steps == 5  # the recipe wins over the preset
    assert r.name == "child"


def test_preset_swapped_from_the_command_line(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    recipe = write(tmp_path, "r.yaml", "defaults: [base, {trainer: cpu}]\ntrainer: {max_steps: 2}\n")
    cfg = load_recipe(recipe, ["trainer=deepspeed_zero3_offload"]).to_object()
    assert cfg.trainer.strategy.name == StrategyName.deepspeed
    assert cfg.trainer.strategy.stage == 3 and cfg.trainer.strategy.offload_optimizer
    assert cfg.trainer.max_steps == 2
    # A recipe that lists no preset still takes one from the command line.
    plain = write(tmp_path, "plain.yaml", BASE)
    assert load_recipe(plain, ["trainer=ddp"]).to_object().trainer.strategy.name == StrategyName.ddp


def test_interpolation_is_resolved(tmp_path):
    recipe = write(tmp_path, "r.yaml", BASE + "model:\n  hidden: ${data.samples}\nname: tiny-bs${data.batch_size}\n")
    r = load_recipe(recipe, ["data.samples=48"])
    assert r.to_object().model.hidden == 48  # interpolation sees the override
    assert r.name == "tiny-bs4"
    assert "${" not in r.to_yaml()


def test_dotlist_overrides_are_typed(tmp_path):
    recipe = write(tmp_path, "r.yaml", BASE)
    cfg = load_recipe(recipe, ["trainer.max_steps=10", "data.batch_size=4", "trainer.precision=bf16-mixed",
                               "trainer.devices=2", "optim.betas=[0.9,0.95]"]).to_object()
    assert cfg.trainer.max_steps == 10 and isinstance(cfg.trainer.max_steps, int)
    assert cfg.trainer.precision == Precision["bf16-mixed"]
    assert cfg.trainer.devices == 2
    assert cfg.optim.betas == [0.9, 0.95]


def test_saved_config_round_trips(tmp_path):
    recipe = write(tmp_path, "r.yaml", "defaults: [{trainer: ddp}]\n" + BASE)
    first = load_recipe(recipe, ["trainer.precision=bf16-mixed"])
    saved = write(tmp_path, "saved.yaml", first.to_yaml())
    again = load_recipe(saved)
    assert again.to_container() == first.to_container()
    assert "precision: bf16-mixed" in first.to_yaml()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_stepz=3"], "unknown key 'trainer.max_stepz' in 'trainer' (did you mean 'trainer.max_steps'?)"),
        (["data.batchsize=3"], "unknown key 'data.batchsize' in 'data' (did you mean 'data.batch_size'?)"),
        (["zzz=1"], "unknown key 'zzz' at the top level; valid keys: task, name, seed"),
        (["trainer.max_steps=abc"], "trainer.max_steps: expected int, got str 'abc'"),
        (["seed=1.5"], "seed: expected int, got float 1.5"),
        (["trainer.precision=fp64"], "trainer.precision: expected one of 32-true, bf16-mixed, 16-mixed, bf16-true, "
                                     "got str 'fp64'"),
        (["trainer.gradient_clip_val=big"], "trainer.gradient_clip_val: expected float or null, got str 'big'"),
        (["trainer.precision=off"], "got bool False (YAML reads a bare on/off/yes/no as a boolean: quote the word"),
        (["trainer=3"], "trainer preset '3' not found; choose one of: cpu, ddp, deepspeed_zero2"),
        (["trainer=dpp"], "trainer preset 'dpp' not found (did you mean 'ddp'?)"),
        (["trainer.strategy=fast"], "trainer.strategy: expected a mapping (StrategyConfig), got str 'fast'"),
        (["nonsense"], "override 'nonsense' is not of the form key=value"),
        (["task=tst.tiny"], "unknown task 'tst.tiny' (did you mean 'test.tiny'?)"),
        (["model.hidden=${data.nope}"], "model.hidden: interpolation refers to an unknown key"),
    ],
)
def test_user_errors_name_the_key(tmp_path, overrides, message):
    recipe = write(tmp_path, "r.yaml", BASE)
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_required_value_is_named(tmp_path):
    recipe = write(tmp_path, "r.yaml", BASE.replace("  name: random-linear\n", ""))
    with pytest.raises(ConfigError, match=r"missing required value \(\?\?\?\): data\.name; .*e\.g\. data\.name=\.\.\."):
        load_recipe(recipe)
    # `lvu config` shows such recipes; a value from the command line completes it.
    assert load_recipe(recipe, allow_missing=True).missing_keys() == ["data.name"]
    assert load_recipe(recipe, ["data.name=other"]).to_object().data.name == "other"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    recipe = write(tmp_path, "broken.yaml", "task: test.tiny\ndata:\n  samples: [1, 2\n  batch_size: 4\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe)
    text = str(info.value)
    assert f"{recipe}:4:" in text and "YAML syntax error" in text


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe 'nope/nothing\.yaml' not found"):
        load_recipe("nope/nothing.yaml")
    recipe = write(tmp_path, "r.yaml", "defaults: [missing_base]\n" + BASE)
    with pytest.raises(ConfigError, match=r"defaults entry 'missing_base' not found \(looked for .*missing_base\.yaml"):
        load_recipe(recipe)
    recipe = write(tmp_path, "r2.yaml", "defaults: [{trainer: gpu8}]\n" + BASE)
    with pytest.raises(ConfigError, match="trainer preset 'gpu8' not found"):
        load_recipe(recipe)


def test_other_structural_errors(tmp_path):
    no_task = write(tmp_path, "nt.yaml", "seed: 1\n")
    with pytest.raises(ConfigError, match="no 'task:' given"):
        load_recipe(no_task)
    a = write(tmp_path, "a.yaml", "defaults: [b]\n" + BASE)
    write(tmp_path, "b.yaml", "defaults: [a]\n")
    with pytest.raises(ConfigError, match="defaults form a cycle"):
        load_recipe(a)
    scalar = write(tmp_path, "s.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(scalar)
    bad_group = write(tmp_path, "g.yaml", "defaults: [{trainr: cpu}]\n" + BASE)
    with pytest.raises(ConfigError, match=r"unknown preset group 'trainr' in defaults \(did you mean 'trainer'"):
        load_recipe(bad_group)


def test_evaluation_stages_do_not_require_training_only_values():
    from lvu.errors import ConfigError

    with pytest.raises(ConfigError, match=r"missing required value \(\?\?\?\): data\.train"):
        load_recipe("linvt/instruct", ["host.path=/models/host"])
    cfg = load_recipe("linvt/instruct", ["host.path=/models/host"], stage="predict").to_object()
    assert cfg.data.train is None
    with pytest.raises(ConfigError, match=r"host\.path"):  # what prediction itself needs stays required
        load_recipe("linvt/instruct", [], stage="predict")



def test_values_no_run_can_use_are_refused_together_when_the_recipe_loads(capsys):
    from lvu.cli import main

    bad = ["data.batch_size=0", "data.num_workers=-1", "trainer.devices=0", "data.sampler.min_frames=9",
           "data.sampler.max_frames=4", "data.eval_batch_size=-2", "trainer.threads=0"]
    with pytest.raises(ConfigError) as caught:
        load_recipe("linvt/align", ["host.path=h", "data.train=t", *bad])
    message = str(caught.value)
    for expected in ("data.batch_size=0 must be positive", "data.num_workers=-1 must be 0",
                     "trainer.devices=0 0 devices", "data.sampler.min_frames=9 exceeds data.sampler.max_frames=4",
                     "data.eval_batch_size=-2 must be positive", "trainer.threads=0 must be positive"):
        assert expected in message
    assert main(["config", "linvt/align", "host.path=h", "data.train=t", "data.batch_size=-1"]) == 1
    assert "data.batch_size=-1 must be positive" in capsys.readouterr().err
    load_recipe("linvt/align", ["host.path=h", "data.train=t", "trainer.devices=auto", "data.sampler.min_frames=4",
                                "data.sampler.max_frames=4"])  # the edges are fine


def test_evaluation_stages_need_only_the_split_they_read():
    """`lvu test ... --ckpt RUN` used to insist on data.val (and validate on data.test)."""
    done = ["probe.pretrained=PRE.ckpt", "probe.task=all"]
    assert load_recipe("lvmae/probe_linear", [*done, "data.test=feats"], stage="test").to_object().data.val is None
    assert load_recipe("lvmae/probe_linear", [*done, "data.val=feats"], stage="validate").to_object().data.test is None
    with pytest.raises(ConfigError, match=r"data\.test"):
        load_recipe("lvmae/probe_linear", [*done, "data.val=feats"], stage="test")
    with pytest.raises(ConfigError, match=r"data\.val"):
        load_recipe("lvmae/probe_linear", [*done, "data.train=feats", "data.test=feats"])  # fit validates


def test_a_monitor_the_task_never_logs_is_refused_when_the_recipe_loads(capsys):
    """It used to fail after the first epoch with nothing saved."""
    from lvu.cli import main

    base = ["host.path=h", "data.train=t", "data.val=v"]
    with pytest.raises(ConfigError) as caught:
        load_recipe("linvt/align", [*base, "trainer.checkpoint.monitor=val/los"])
    message = str(caught.value)
    assert "monitor='val/los' is not a metric of task linvt (did you mean 'val/loss'?)" in message
    # What it lists follows the recipe: stage 1 trains with the contrastive loss and on captions.
    assert "val/contrastive_loss" in message and "val/caption_loss" in message and "answer_loss" not in message
    assert main(["config", "lvmae/pretrain", "data.train=t", "trainer.checkpoint.monitor=val/acc"]) == 1
    assert "is not a metric of task lvmae.pretrain" in capsys.readouterr().err
    load_recipe("linvt/align", [*base, "trainer.checkpoint.monitor=val/contrastive_loss"])
    load_recipe("linvt/instruct", ["host.path=h", "data.train=t", "data.val=v", "init.from=a",
                                   "trainer.checkpoint.monitor=val/answer_loss"])
    load_recipe("lvmae/probe_linear", ["probe.pretrained=p", "probe.task=all", "data.train=t", "data.val=v",
                                       "data.test=t", "trainer.checkpoint.monitor=val/acc"])
