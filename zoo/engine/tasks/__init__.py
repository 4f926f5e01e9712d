"""The task registry: one object per task, keyed by its recipe name (``task:``), which the training loop, the
recipe validator and the command lines ask instead of branching on the name (:class:`~zoo.engine.tasks.base.Task`).

- ``cls``: image classification (:mod:`zoo.engine.tasks.cls`)
- ``seg``: semantic segmentation through mmseg's Runner, from an mmseg config (:mod:`zoo.engine.tasks.seg`)
- ``sr``: super-resolution (:mod:`zoo.engine.tasks.sr`)
"""
from __future__ import annotations

from zoo.engine.tasks.base import Task
from zoo.engine.tasks.cls import ClassificationTask
from zoo.engine.tasks.seg import SegmentationTask
from zoo.engine.tasks.sr import SuperResolutionTask

__all__ = ["TASKS", "Task", "get_task"]

TASKS: dict[str, Task] = {t.name: t for t in (ClassificationTask(), SegmentationTask(), SuperResolutionTask())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task {name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name]
