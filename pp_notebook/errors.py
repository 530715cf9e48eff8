"""Every exception and warning pp_notebook raises at its user, in one place.

    Exception
    ├── ClusterError (RuntimeError)   the cluster could not be started, reached or changed
    ├── CellError (ValueError)        a %%parallel cell cannot run as written; nothing ran
    └── RunFailed (RuntimeError)      `%%parallel --raise`: some task failed; `.run` has all
    KeyboardInterrupt
    └── RunInterrupted                an interrupt cancelled a run while a cell or `wait()` /
                                      `result()` waited; finished results kept; `.run`
    UserWarning
    ├── SameRandomStream              a random generator was shipped: one stream per engine
    └── NoRoomToShare                 a big value did not fit in /dev/shm: sent per engine

Inside a task, `pp_notebook.TaskTimeout` (a BaseException, defined with the engine code) stops
a task that ran past its limit. Each message says what went wrong and what to do.
"""

from __future__ import annotations

from typing import Any


class ClusterError(RuntimeError):
    """The cluster could not be started, reached or changed; the message says what to do."""


class CellError(ValueError):
    """A %%parallel cell that cannot be run as written; the message says what to change."""


class RunFailed(RuntimeError):
    """Raised by `%%parallel --raise`, after the display, when any task did not succeed."""

    def __init__(self, message: str, run: Any = None) -> None:
        super().__init__(message)
        self.run = run


class RunInterrupted(KeyboardInterrupt):
    """The run was interrupted before every item had ended; `.run` holds what finished.

    A KeyboardInterrupt, so that it ends the cell as an interrupted cell ends and "Run All"
    stops there.
    """

    def __init__(self, message: str, run: Any = None) -> None:
        super().__init__(message)
        self.run = run

    def _render_traceback_(self) -> list[str]:
        """IPython shows this one line instead of the frames of the waiting code."""
        return [f"{type(self).__name__}: {self}"]


class SameRandomStream(UserWarning):
    """A random generator was shipped: each engine draws the same numbers from its copy."""


class NoRoomToShare(UserWarning):
    """A big value could not be shared on its hosts (no room in /dev/shm): it went with the
    task to each engine instead. The run goes on."""
