"""Moved: a task's `Analysis` is `nnlab.tasks.base.Analysis` (tasks import nothing from the
runner); this name stays for code written before."""

from nnlab.tasks.base import Analysis

__all__ = ["Analysis"]
