"""The task registry: the stages ask it for the task a recipe names, never branch on the name.

A task package (edgeft/classification, edgeft/generation) registers its Task object when it is
imported; `get_task` imports the package of that name on first use, so that nothing below the
task layer imports a task.
"""
from __future__ import annotations

import importlib

from edgeft import EdgeftError
from edgeft.core.task import Task

_TASKS: dict[str, Task] = {}
KNOWN = ("classification", "generation")


def register(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def get_task(name: str | None) -> Task:
    if name not in _TASKS and name in KNOWN:
        importlib.import_module(f"edgeft.{name}")
    if name not in _TASKS:
        raise EdgeftError(f"unknown task '{name}' (known: {', '.join(KNOWN)})")
    return _TASKS[name]
