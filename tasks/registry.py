"""Tasks by name (`task.name`): what is learned, each a `Task` (tasks/task.py)."""

from __future__ import annotations

from flowerbed.tasks.classification import ClassificationTask
from flowerbed.tasks.detection import DetectionTask
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.retrieval import RetrievalTask
from flowerbed.tasks.task import Task

TASKS: dict[str, Task] = {
    "classification": ClassificationTask(),
    "retrieval": RetrievalTask(),
    "detection": DetectionTask(),
}


def task_of(cfg: dict) -> Task:
    """The run's task (`task.name`; classification where the config predates the key)."""
    name = str(cfg.get("task.name", "classification"))
    if name not in TASKS:
        raise ConfigError.invalid("task.name", name, "one of " + ", ".join(TASKS))
    return TASKS[name]
