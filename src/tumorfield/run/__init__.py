"""Batch runs: a configuration in, a trajectory file out, resumable after a kill.

:class:`Run` owns one run's file from creation (or a checkpoint) to its outcome;
:class:`OutputTarget` decides where the file lives so that a failed run never
destroys earlier output and no two processes write one output; signals stop the loop
between chunks; a failed write raises :class:`StorageError` (exit 74) with the last commit intact.
"""

from ..io._guard import StorageError as StorageError
from ._job import Interrupted as Interrupted
from ._job import Outcome as Outcome
from ._job import Run as Run
from ._output import OutputError as OutputError
from ._output import OutputTarget as OutputTarget

__all__ = ["Interrupted", "Outcome", "OutputError", "OutputTarget", "Run", "StorageError"]
