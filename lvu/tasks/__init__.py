"""LightningModules and DataModules per method; a recipe's ``task:`` names one through the registry."""

from lvu.tasks.registry import TaskSpec, available_tasks, get_task, register_task

__all__ = ["TaskSpec", "available_tasks", "get_task", "register_task"]
