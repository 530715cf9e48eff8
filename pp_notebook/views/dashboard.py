"""The live dashboard of a Run: an anywidget model fed by live.py's timer, drawn by
widgets/dashboard.js; when the run ends, its output becomes the static picture (static.py).

Python syncs the compact state of state.py, at most once a frame (live.INTERVAL_S), as one
message; the front-end draws it. Messages from the front-end: `cancel` (the Cancel button,
what `run.cancel()` does) and `traceback` (a failure clicked: its traceback is sent then, not
with every frame). The display also carries text/plain and text/html, for front-ends without
widgets, and is replaced at the end by HTML that needs no kernel, widget manager or script.
"""

from __future__ import annotations

from html import escape
from typing import Any

import anywidget
import traitlets
from IPython.display import display

from ..snapshot import RunSnapshot
from ..summary import RunSummary
from .assets import asset
from .live import ProgressView, Source
from .state import DashboardState
from .static import final_picture


class DashboardWidget(anywidget.AnyWidget):
    """The dashboard's model: the compact state, and whether Cancel was clicked."""

    _esm = asset("dashboard.js")
    _css = asset("dashboard.css")
    progress: traitlets.Dict = traitlets.Dict().tag(sync=True)
    engines: traitlets.List = traitlets.List().tag(sync=True)
    timeline: traitlets.Dict = traitlets.Dict().tag(sync=True)
    histogram: traitlets.Dict = traitlets.Dict().tag(sync=True)
    failures: traitlets.List = traitlets.List().tag(sync=True)
    failures_more = traitlets.Int(0).tag(sync=True)
    preview: traitlets.Dict = traitlets.Dict().tag(sync=True)
    cancelling = traitlets.Bool(False).tag(sync=True)


class Dashboard(ProgressView):
    """Progress, engines, timeline, histogram, failures and results so far, live, with a
    Cancel button; the final picture once the run has ended."""

    shows_failures = True

    def __init__(self, source: Source) -> None:
        super().__init__(source)
        self.state = DashboardState()
        self.widget = DashboardWidget()
        self.widget.on_msg(self._on_message)
        self.final_html: str | None = None
        self._summary: RunSummary | None = None
        self._handle: Any = None

    def _show(self) -> None:
        self._handle = display(self.bundle(), raw=True, display_id=True)

    def _draw(self, snap: RunSnapshot) -> None:
        values = self.state.update(snap)
        with self.widget.hold_sync():  # one message per frame
            for name, value in values.items():
                setattr(self.widget, name, value)

    def _draw_stop(self, summary: RunSummary) -> None:
        """The last frame, then the display becomes the final picture and the widget closes
        (a saved notebook then needs no widget state)."""
        self._draw(self.source.snapshot())
        self._summary = summary
        self.final_html = final_picture(self.state, summary)
        if self._handle is not None:
            self._handle.update(self.bundle(), raw=True)
        self.widget.close()

    def bundle(self) -> dict:
        """What the display shows: the widget with text fallbacks while the run goes on; the
        final picture and the summary as text once it has ended."""
        if self._summary is not None and self.final_html is not None:
            return {"text/html": self.final_html,
                    "text/plain": "\n".join([str(self._summary), *self.state.failure_lines()])}
        shown = self.widget._repr_mimebundle_()
        assert shown is not None, "a widget with a view has a display"
        data = dict(shown[0])  # (data, metadata)
        line = self.widget.progress.get("line") or "pp_notebook run starting…"
        data["text/plain"] = line
        data["text/html"] = f"<p>{escape(line)}</p>"
        return data

    def _on_message(self, widget: Any, content: dict, buffers: list) -> None:
        if content.get("kind") == "cancel" and not self.widget.cancelling:
            self.cancelled = True
            self.widget.cancelling = True
            self.source.cancel()
        elif content.get("kind") == "traceback":
            task = int(content.get("task", -1))
            self.widget.send({"kind": "traceback", "task": task,
                              "text": self.state.traceback(task)})
