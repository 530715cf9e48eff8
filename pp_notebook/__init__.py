"""pp_notebook: run many independent Python tasks in parallel from a notebook.

`%load_ext pp_notebook` registers the `%%parallel` cell magic; the same power is here as a
plain Python API: `run = pp_notebook.map(fn, items)`, `run.wait()`, `run.result()`.
"""

from .cluster import ClusterError, connect, scale, start, status, stop
from .engine import TaskTimeout
from .records import RunSummary, TaskRecord
from .run import Run, RunSnapshot, map

__all__ = [
    "ClusterError", "Run", "RunSnapshot", "RunSummary", "TaskRecord", "TaskTimeout",
    "connect", "map", "scale", "start", "status", "stop",
]
__version__ = "0.1.0"
