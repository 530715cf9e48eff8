"""Live progress of a Run: one timer thread reads snapshots, the views only draw.

As in dask's progressbar: `ProgressView` polls `run.snapshot()` every INTERVAL_S (never per
event, so drawing costs the same for 10 or 100,000 tasks) and hands it to `_draw`; when the run
ends, or on `stop()`, `_draw_stop` gets the summary once. `TextProgress` rewrites one line with
`\\r` (terminals, `--no-widget`); the widget view is `dashboard.Dashboard`, a subclass.
`progress()` picks one.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from typing import IO, Any

from IPython.display import Pretty, display

from .records import RunSummary
from .run import Run, RunSnapshot

INTERVAL_S = 0.15
BAR_WIDTH = 30


def status_text(snap: RunSnapshot) -> str:
    """`412/1000 done · 3 failed · 2 cancelled · 4.1 s`: the live counts both views show."""
    parts = [f"{snap.completed}/{snap.total} done"]
    if snap.failed:
        parts.append(f"{snap.failed} failed")
    if snap.cancelled:
        parts.append(f"{snap.cancelled} cancelled")
    parts.append(f"{snap.elapsed_s:.1f} s")
    return " · ".join(parts)


class ProgressView:
    """Polls a Run's snapshot on a timer thread until the run ends; subclasses draw."""

    def __init__(self, run: Run) -> None:
        self.run = run
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
        snap = self.run.snapshot()
        while not snap.done and not self._stopping.is_set():
            self._draw(snap)
            self._stopping.wait(INTERVAL_S)
            snap = self.run.snapshot()
        self._draw_stop(self.run.summary())

    def _show(self) -> None:
        """Create the display; runs in the cell's thread, so the output lands in that cell."""

    def _draw(self, snap: RunSnapshot) -> None:
        raise NotImplementedError

    def _draw_stop(self, summary: RunSummary) -> None:
        raise NotImplementedError


class TextProgress(ProgressView):
    """`[#########.....................] 300/1000 done · 2 failed · 3.1 s`, redrawn in place."""

    def __init__(self, run: Run, stream: IO[str] | None = None) -> None:
        super().__init__(run)
        self.stream = stream if stream is not None else sys.stdout
        self._width = 0

    def _draw(self, snap: RunSnapshot) -> None:
        filled = BAR_WIDTH * snap.completed // max(snap.total, 1)
        self._write(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {status_text(snap)}")

    def _draw_stop(self, summary: RunSummary) -> None:
        self._write(summary.line())
        self.stream.write("\n")
        self.stream.flush()

    def _write(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)


def widgets_available() -> bool:
    """True in a Jupyter kernel with ipywidgets installed; False in terminal IPython or scripts."""
    from IPython import get_ipython

    shell: Any = get_ipython()
    return getattr(shell, "kernel", None) is not None \
        and importlib.util.find_spec("ipywidgets") is not None


def background_notice(run: Run, where: str) -> None:
    """Say that `run` goes on in the background, and update the same line when it ends."""
    tasks = f"{len(run.records)} tasks"
    handle = display(Pretty(f"{tasks} running in the background as {where}: .result() waits "
                            "for them and gives the DataFrame; also pp_notebook.last_run()"),
                     display_id=True)

    def finished(ended: Run) -> None:
        if handle is not None:
            handle.update(Pretty(f"{tasks} ran in the background as {where} and have finished:"
                                 f" {ended.summary().line()}. .result() gives the DataFrame"))

    run.add_done_callback(finished)


def progress(run: Run, widget: bool = True) -> ProgressView:
    """Start the live view of `run`: the dashboard where widgets can be drawn, else a text line."""
    if widget and widgets_available():
        from .dashboard import Dashboard  # dashboard builds on this module

        return Dashboard(run).start()
    return TextProgress(run).start()
