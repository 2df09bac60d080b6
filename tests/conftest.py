import os
from pathlib import Path

import pytest

# Registers the test-only task `test.tiny` (product code ships no toy tasks).
import support.tiny_task  # noqa: F401

from lvu.data.synth import SynthConfig, synthesize

TESTS = os.path.dirname(__file__)

# Small, short synthetic videos: 12-24 s at 8 fps, 64x48 (the timecode strip needs >= 32 px of width).
SMALL_VIDEOS = SynthConfig(min_seconds=12, max_seconds=24, fps=8, width=64, height=48)


@pytest.fixture(autouse=True, scope="session")
def shard_cache(tmp_path_factory):
    """Remote and compressed shards are fetched into a temporary cache (never the user's ~/.cache), inherited by
    the processes the tests start."""
    cache = tmp_path_factory.mktemp("shard-cache")
    previous = os.environ.get("LVU_SHARD_CACHE")
    os.environ["LVU_SHARD_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("LVU_SHARD_CACHE", None)
    else:
        os.environ["LVU_SHARD_CACHE"] = previous


@pytest.fixture
def recipe_path():
    """Path of a test recipe under tests/recipes/ by name."""

    def path(name: str) -> str:
        return os.path.join(TESTS, "recipes", f"{name}.yaml")

    return path


@pytest.fixture(scope="session")
def synth_shards(tmp_path_factory) -> Path:
    """Ten synthetic videos in three shards (4 + 4 + 2), shared by the data tests (read-only)."""
    out = tmp_path_factory.mktemp("synth") / "train"
    synthesize(out, 10, seed=0, cfg=SMALL_VIDEOS, maxcount=4, quiet=True)
    return out


@pytest.fixture(scope="session")
def eval_host(tmp_path_factory) -> Path:
    """A tiny random LLaVA-OneVision host saved once for the evaluation tests (read-only)."""
    from support.hosts import save_host

    return save_host("llava_onevision", tmp_path_factory.mktemp("eval-host") / "host")


def eval_args(host: Path, shards: Path, folder: Path, *extra: str) -> list[str]:
    """``lvu eval`` of the uniform baseline on the tiny host (fp32, one CPU process unless ``extra`` says)."""
    from support.hosts import FRAME

    return ["uniform/instruct", f"host.path={host}", f"data.predict={shards}", f"run_dir={folder}", "trainer=cpu",
            f"data.frame_size={FRAME}", "data.eval_frames=3", "data.eval_batch_size=3", "data.num_workers=0",
            "trainer.progress_bar=none", "trainer.precision=32-true", "parts.llm.mode=frozen", *extra]
