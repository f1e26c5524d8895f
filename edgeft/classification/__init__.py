"""Text classification: everything specific to it (examples, bench runners and rows, static int8)."""
from edgeft.classification.task import TASK

__all__ = ["TASK"]
