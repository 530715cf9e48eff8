"""The timer behind every live view: snapshots are read on a timer, never per event, so
drawing costs the same for 10 or 100,000 tasks (as dask's progress bars do).

A view is handed a source with `snapshot()` and `summary()` (a Run), and sees nothing else:
`_draw` gets each snapshot, `_draw_stop` the summary once, when the run ends or on `stop()`.
"""

from __future__ import annotations

import threading
from typing import Protocol

from ..snapshot import RunSnapshot
from ..summary import RunSummary

INTERVAL_S = 0.15


class Source(Protocol):
    """What a live view reads: immutable snapshots while it runs, the summary at the end;
    and what the dashboard's Cancel button calls."""

    def snapshot(self) -> RunSnapshot: ...

    def summary(self) -> RunSummary: ...

    def cancel(self) -> None: ...


class ProgressView:
    """Polls a source's snapshot on a timer thread until the run ends; subclasses draw."""

    shows_failures = False
    """Whether the view lists the run's failures itself (the caller then shows no report)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.cancelled = False  # set when the view's own Cancel button cancelled the run
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pp_notebook-progress",
                                        daemon=True)

    def start(self) -> ProgressView:
        """Show the view (in the calling cell) and start redrawing it."""
        self._show()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Draw the final state now and end the thread (it ends by itself when the run does)."""
        self._stopping.set()
        self._thread.join()

    def _loop(self) -> None:
        snap = self.source.snapshot()
        while not snap.done and not self._stopping.is_set():
            self._draw(snap)
            self._stopping.wait(INTERVAL_S)
            snap = self.source.snapshot()
        self._draw_stop(self.source.summary())

    def _show(self) -> None:
        """Create the display; runs in the cell's thread, so the output lands in that cell."""

    def _draw(self, snap: RunSnapshot) -> None:
        raise NotImplementedError

    def _draw_stop(self, summary: RunSummary) -> None:
        raise NotImplementedError
