"""The live dashboard of a Run: stock ipywidgets, redrawn by live.py's timer from snapshots.

Overall progress and counts, one table row per engine (state, tasks, load, running task, CPU
and memory of local engines), a bounded timeline and a duration histogram (charts.py); at the
end, the summary. The display also carries the summary as plain HTML and text (set when the run
ends), which is what GitHub, nbviewer and terminals show of a saved notebook.
"""

from __future__ import annotations

import socket
from html import escape

import ipywidgets as widgets
import psutil
from IPython.display import display

from .. import fmt
from ..snapshot import EngineSnapshot, RunSnapshot
from ..summary import RunSummary, summary_html
from .charts import Histogram, Timeline
from .live import ProgressView, Source
from .text import status_text
from .theme import FAILED_COLOUR, RUNNING_COLOUR, STATE_COLOURS, STATUS_COLOURS

STYLE = """<style>
.ppnb {font-family: var(--jp-ui-font-family, sans-serif); font-size: 12px; line-height: 1.4}
.ppnb table {border-collapse: collapse; margin: 2px 0 6px 0}
.ppnb th {text-align: right; font-weight: 600; border-bottom: 1px solid #ccc; padding: 1px 8px}
.ppnb td {text-align: right; padding: 1px 8px; font-variant-numeric: tabular-nums}
.ppnb th:nth-child(2), .ppnb td:nth-child(2) {text-align: left}
.ppnb .state {color: #fff; border-radius: 3px; padding: 0 5px}
</style>"""
TIMELINE_CAPTION = "timeline, per engine: " + " ".join(
    f'<span style="color:{colour}">■</span> {name}'
    for name, colour in (("ok", STATUS_COLOURS["ok"]), ("failed", FAILED_COLOUR),
                         ("cancelled", STATUS_COLOURS["cancelled"]), ("running", RUNNING_COLOUR)))
COLUMNS = ("engine", "host", "state", "done", "failed", "load", "running", "for", "CPU",
           "memory")
HOST = socket.gethostname()


class Dashboard(ProgressView):
    """Progress, engines, timeline and histogram of a run, live; the summary at the end."""

    def __init__(self, source: Source) -> None:
        super().__init__(source)
        self.timeline = Timeline()
        self.histogram = Histogram()
        self._processes = _LocalProcesses()
        self._summary: RunSummary | None = None
        self._handle = None
        self.bar = widgets.IntProgress(min=0, max=max(source.snapshot().total, 1), value=0,
                                       layout=widgets.Layout(width="320px"))
        self.percent = widgets.HTML()
        self.counts = widgets.HTML()
        self.engines = widgets.HTML()
        self.charts = widgets.HTML()
        self.summary = widgets.HTML()
        self.widget = widgets.VBox([
            widgets.HTML(STYLE), widgets.HBox([self.bar, self.percent]),
            self.counts, self.engines, self.charts, self.summary])

    def _show(self) -> None:
        self._handle = display(self.bundle(), raw=True, display_id=True)

    def _draw(self, snap: RunSnapshot) -> None:
        for mark in self.timeline.update(snap):
            self.histogram.add(mark.duration_s, mark.status)
        self.bar.max = max(snap.total, 1)
        self.bar.value = snap.completed
        share = snap.completed / snap.total if snap.total else 1.0
        self.percent.value = f'<span class="ppnb"><b>{share:.0%}</b></span>'
        self.counts.value = f'<div class="ppnb">{escape(counts_line(snap))}</div>'
        self.engines.value = self._engine_table(snap)
        self.charts.value = (f'<div class="ppnb" style="display:flex;gap:28px">'
                             f'<div>{TIMELINE_CAPTION}<br>{self.timeline.svg(snap)}</div>'
                             f'<div>durations<br>{self.histogram.svg()}</div></div>')

    def _draw_stop(self, summary: RunSummary) -> None:
        """The last frame and the summary; the display's HTML and text become the summary."""
        snap = self.source.snapshot()
        self._draw(snap)
        self.bar.bar_style = "warning" if snap.failed else "info" if snap.cancelled \
            else "success"
        self._summary = summary
        self.summary.value = f'<div class="ppnb">{summary_html(summary, engines=False)}</div>'
        if self._handle is not None:
            self._handle.update(self.bundle(), raw=True)

    def bundle(self) -> dict:
        """What the display shows: the widget, plus HTML and text for frontends without
        widgets (the summary once the run has ended)."""
        data = self.widget._repr_mimebundle_()
        if self._summary is not None:
            data["text/html"] = summary_html(self._summary)
            data["text/plain"] = str(self._summary)
        else:
            data["text/html"] = data["text/plain"] = counts_line(self.source.snapshot())
        return data

    def _engine_table(self, snap: RunSnapshot) -> str:
        stats = self._processes.stats(snap.engines)
        rows = []
        for engine in sorted(snap.engines, key=lambda e: e.id):
            cpu, memory = stats.get(engine.id, (None, None))
            cells = (
                engine.id, escape(engine.host or "?"), _badge(engine.state), engine.done,
                _failed(engine.failed),
                f"{engine.busy_s / snap.elapsed_s:.0%}" if snap.elapsed_s else "–",
                escape(self._running(engine)), fmt.seconds(engine.running_for_s),
                fmt.cores(cpu), fmt.size(memory))
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        head = "".join(f"<th>{name}</th>" for name in COLUMNS)
        return f'<div class="ppnb"><table><tr>{head}</tr>{"".join(rows)}</table></div>'

    @staticmethod
    def _running(engine: EngineSnapshot) -> str:
        if engine.running_task is None:
            return ""
        return f"#{engine.running_task}: {engine.running_item}"


def counts_line(snap: RunSnapshot) -> str:
    """progress.py's status text, then running, timed out, retried, ETA and tasks per second."""
    parts = [status_text(snap), f"{sum(e.state == 'busy' for e in snap.engines)} running"]
    if snap.counts.get("timeout"):
        parts.append(f"{snap.counts['timeout']} timed out")
    if snap.retried:
        parts.append(f"{snap.retried} retried")
    if snap.completed and snap.elapsed_s > 0:
        per_second = snap.completed / snap.elapsed_s
        if not snap.done:
            parts.append(f"ETA {fmt.seconds((snap.total - snap.finished) / per_second)}")
        parts.append(fmt.rate(per_second))
    return " · ".join(parts)


def _badge(state: str) -> str:
    return f'<span class="state" style="background:{STATE_COLOURS[state]}">{state}</span>'


def _failed(count: int) -> str:
    return f'<b style="color:{FAILED_COLOUR}">{count}</b>' if count else "0"


class _LocalProcesses:
    """CPU% and memory of the engines on this host, from one cached psutil.Process per pid."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def stats(self, engines: tuple) -> dict[int, tuple[float, int]]:
        """Per engine id: (CPU percent of one core since the last call, resident memory in
        bytes)."""
        live = {e.pid: e.id for e in engines
                if e.pid and e.host == HOST and e.state not in ("dead", "left")}
        for pid in set(self._processes) - set(live):
            del self._processes[pid]
        result = {}
        for pid, engine in live.items():
            try:
                process = self._processes.get(pid)
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                result[engine] = (process.cpu_percent(None), process.memory_info().rss)
            except psutil.Error:
                self._processes.pop(pid, None)
        return result
