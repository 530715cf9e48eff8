"""The exceptions a user of pp_notebook meets, beside the cell and cluster errors.

- `RunInterrupted` (a KeyboardInterrupt): a run was interrupted or cancelled while a cell or
  `run.wait()` / `run.result()` waited for it. Finished results are kept; the rest are
  `cancelled`. Being a KeyboardInterrupt, it ends the cell as an interrupted cell ends, so
  "Run All" stops there.
- `RunFailed`: raised by `%%parallel --raise` after the display when any task failed.
"""

from __future__ import annotations

from typing import Any


class RunInterrupted(KeyboardInterrupt):
    """The run was interrupted before every item had ended; `.run` holds what finished."""

    def __init__(self, message: str, run: Any = None) -> None:
        super().__init__(message)
        self.run = run

    def _render_traceback_(self) -> list[str]:
        """IPython shows this one line instead of the frames of the waiting code."""
        return [f"{type(self).__name__}: {self}"]


class RunFailed(RuntimeError):
    """Raised by `%%parallel --raise`, after the display, when any task did not succeed."""


class SameRandomStream(UserWarning):
    """A random generator was shipped: each engine draws the same numbers from its copy."""
