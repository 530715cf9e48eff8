"""pp_notebook: run many independent Python tasks in parallel from a notebook.

`%load_ext pp_notebook` registers the `%%parallel` cell magic and `%pp`; the same power is a
plain Python API: `run = pp_notebook.map(fn, items)`, `run.result()`, `run.errors()`.
"""

from .api import forget, last_run, map, share
from .cluster import connect, scale, start, status, stop
from .engine import TaskTimeout
from .errors import (
    CellError,
    ClusterError,
    NoRoomToShare,
    RunFailed,
    RunInterrupted,
    SameRandomStream,
)
from .magic import load_ipython_extension
from .records import TaskRecord
from .run import Run
from .snapshot import RunSnapshot, Status
from .summary import RunSummary

__all__ = [
    "CellError", "ClusterError", "NoRoomToShare", "Run", "RunFailed", "RunInterrupted",
    "RunSnapshot", "RunSummary", "SameRandomStream", "Status", "TaskRecord", "TaskTimeout",
    "connect", "forget", "last_run", "load_ipython_extension", "map", "scale", "share", "start",
    "status", "stop",
]
__version__ = "0.2.0"
