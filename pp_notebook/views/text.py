"""Progress as text: `[#####.....] 300/1000 done · 2 failed · 3.1 s`, rewritten in place with
`\\r` (terminals, `--no-widget`); and the one line a background run leaves in its cell.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from IPython.display import Pretty, display

from ..snapshot import RunSnapshot
from ..summary import RunSummary
from .live import ProgressView, Source

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


class TextProgress(ProgressView):
    """`[#########.....................] 300/1000 done · 2 failed · 3.1 s`, redrawn in place."""

    def __init__(self, source: Source, stream: IO[str] | None = None) -> None:
        super().__init__(source)
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


def background_notice(run: Any, where: str) -> None:
    """Say that `run` goes on in the background, and update the same line when it ends (`run`
    has `snapshot()`, `summary()` and `add_done_callback()`, as a Run has)."""
    tasks = f"{run.snapshot().total} tasks"
    handle = display(Pretty(f"{tasks} running in the background as {where}: .result() waits "
                            "for them and gives the DataFrame; also pp_notebook.last_run()"),
                     display_id=True)

    def finished(ended: Any) -> None:
        if handle is not None:
            handle.update(Pretty(f"{tasks} ran in the background as {where} and have finished:"
                                 f" {ended.summary().line()}. .result() gives the DataFrame"))

    run.add_done_callback(finished)
