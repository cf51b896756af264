"""Tasks by name (`task.name`): what is learned, each a `Task` (tasks/task.py)."""

from __future__ import annotations

from flowerbed.tasks.classification import ClassificationTask
from flowerbed.tasks.detection import DetectionTask
from flowerbed.tasks.task import Task

TASKS: dict[str, Task] = {
    "classification": ClassificationTask(),
    "detection": DetectionTask(),
}
