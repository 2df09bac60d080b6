"""Test-only tasks and helpers (product code has no toy tasks)."""
