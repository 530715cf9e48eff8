"""pp_notebook: run many independent Python tasks in parallel from a notebook.

`%load_ext pp_notebook` registers the `%%parallel` cell magic; the same power is here as a
plain Python API: `run = pp_notebook.map(fn, items)`, `run.wait()`, `run.result()`.
"""

from typing import Any

from .cluster import ClusterError, connect, scale, start, status, stop
from .engine import TaskTimeout
from .errors import RunFailed, RunInterrupted, SameRandomStream
from .records import RunSummary, TaskRecord
from .run import Run, RunSnapshot, last_run, map

__all__ = [
    "ClusterError", "Run", "RunFailed", "RunInterrupted", "RunSnapshot", "RunSummary",
    "SameRandomStream", "TaskRecord", "TaskTimeout",
    "connect", "last_run", "load_ipython_extension", "map", "scale", "start", "status", "stop",
]
__version__ = "0.2.0"


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext pp_notebook`: register the `%%parallel` and `%pp` magics."""
    from .magic import ParallelMagics

    magics = ParallelMagics(ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics.note_cell)
    ipython.events.register("post_run_cell", magics.forget_cell)
