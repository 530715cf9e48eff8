"""pp_notebook: run many independent Python tasks in parallel from a notebook.

`%load_ext pp_notebook` registers the `%%parallel` cell magic and `%pp`; the same power is a
plain Python API: `run = pp_notebook.map(fn, items)`, `run.result()`, `run.errors()`.

Public names are imported on first use (PEP 562): an engine imports `pp_notebook.engine`
alone, and must not load pandas, matplotlib and the client with it (0.9 s and tens of MB
an engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "api": ("forget", "last_run", "map", "share"),
    "cluster": ("connect", "scale", "start", "status", "stop"),
    "engine": ("TaskTimeout",),
    "errors": ("CellError", "ClusterError", "NoRoomToShare", "RunFailed", "RunInterrupted",
               "SameRandomStream"),
    "magic": ("load_ipython_extension",),
    "records": ("TaskRecord",),
    "run": ("Run",),
    "snapshot": ("RunSnapshot", "Status"),
    "summary": ("RunSummary",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "CellError", "ClusterError", "NoRoomToShare", "Run", "RunFailed", "RunInterrupted",
    "RunSnapshot", "RunSummary", "SameRandomStream", "Status", "TaskRecord", "TaskTimeout",
    "connect", "forget", "last_run", "load_ipython_extension", "map", "scale", "share", "start",
    "status", "stop",
]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    """A public name, imported from its module the first time it is asked for."""
    home = _HOME_OF.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the public ones not yet imported included."""
    return sorted([*globals(), *__all__])
