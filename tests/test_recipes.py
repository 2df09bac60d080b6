"""Every YAML under recipes/ resolves against its schema."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lvu.config import load_recipe, recipes_dir, validate
from lvu.schema import PRESET_GROUPS

ALL_YAML = sorted(recipes_dir().rglob("*.yaml"))
USER_INPUT = ("data.train", "data.val", "data.test", "data.predict", "probe.task", "probe.pretrained", "host.path",
              "host.vision", "host.llm", "init.from",
              # SEAL: model folders, token and output folders
              "models.encoder", "models.sam2", "models.detector", "encoder", "tokens", "output.folder")


def test_recipes_folder_is_not_empty():
    assert {p.stem for p in (recipes_dir() / "trainer").glob("*.yaml")} >= {
        "cpu", "ddp", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"
    }


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.relative_to(recipes_dir()).as_posix())
def test_yaml_resolves_against_its_schema(path):
    group = path.relative_to(recipes_dir()).parts[0]
    if group in PRESET_GROUPS:
        # A preset is a fragment of one section: validate it against that section's schema.
        validate(OmegaConf.load(path), PRESET_GROUPS[group])
    else:
        recipe = load_recipe(path, allow_missing=True)
        # Only values a user must supply (data locations, checkpoints, which label task) may be left as ???.
        for key in recipe.missing_keys():
            assert key.startswith(USER_INPUT), f"{path}: {key} is ??? but is not user input"
