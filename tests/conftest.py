import os

import pytest

# Registers the test-only task `test.tiny` (product code ships no toy tasks).
import support.tiny_task  # noqa: F401

TESTS = os.path.dirname(__file__)


@pytest.fixture
def recipe_path():
    """Path of a test recipe under tests/recipes/ by name."""

    def path(name: str) -> str:
        return os.path.join(TESTS, "recipes", f"{name}.yaml")

    return path
