"""Tasks: importing this package registers every task in `TASKS`, in the order listings show them."""

from peftbench.tasks.base import TASKS
from peftbench.tasks.classification import ClassificationTask
from peftbench.tasks.instruction import InstructionTask
from peftbench.tasks.summarization import SummarizationTask

for _task in (ClassificationTask(), SummarizationTask(), InstructionTask()):
    TASKS.add(_task.name, _task)

__all__ = ["TASKS"]
