"""The dashboard's compact state: what the widget syncs and the final picture draws.

Folded from Run snapshots on the live view's timer (never per event): the counts, one row per
engine, the chart aggregates (charts.py), the failures seen (the first FAILURES_SHOWN, their
tracebacks kept here and sent only when asked for) and a preview of the results. Every part
is bounded by the engine count or a constant, so a frame costs the same for 10 or 10 million
tasks.
"""

from __future__ import annotations

import socket

import psutil

from .. import fmt
from ..snapshot import EngineSnapshot, Failure, RunSnapshot
from ..summary import shipment_text
from .charts import Histogram, Timeline
from .report import TRACEBACKS_HINT
from .text import status_text

FAILURES_SHOWN = 50
"""Failures the dashboard lists (the first ones it sees); the rest are counted."""
TRACEBACK_CHARS = 8_000
"""A traceback's tail kept for the dashboard (run.errors() has them whole)."""
ERROR_CHARS = 200
HOST = socket.gethostname()


class DashboardState:
    """Folds snapshots into the compact, JSON-ready values the dashboard shows."""

    def __init__(self) -> None:
        self.timeline = Timeline()
        self.histogram = Histogram()
        self.failures: dict[int, Failure] = {}  # task -> the failure, in the order seen
        self.values: dict = {}  # the latest frame's
        self._processes = _LocalProcesses()

    def update(self, snap: RunSnapshot) -> dict:
        """The values for this frame, by the widget's trait names."""
        for mark in self.timeline.update(snap):
            self.histogram.add(mark.duration_s, mark.status)
        for failure in snap.failures:
            if len(self.failures) < FAILURES_SHOWN:
                self.failures.setdefault(failure.task, failure)
        self.values = {
            "progress": {"total": snap.total, "completed": snap.completed,
                         "failed": snap.failed, "cancelled": snap.cancelled,
                         "done": snap.done, "line": counts_line(snap)},
            "engines": self._engines(snap),
            "timeline": self.timeline.state(snap),
            "histogram": self.histogram.state(),
            "failures": [[f.task, f.item, f.status, f.error[:ERROR_CHARS]]
                         for f in self.failures.values()],
            "failures_more": max(snap.failed - len(self.failures), 0),
            "preview": {"first": [_row(r) for r in snap.first_rows],
                        "latest": [_row(r) for r in snap.latest_rows]},
        }
        return self.values

    def failure_lines(self) -> list[str]:
        """The failures seen, a line each, for front-ends that show only text."""
        if not self.failures:
            return []
        lines = [f"{len(self.failures)} failed task{'s' if len(self.failures) != 1 else ''} "
                 f"({TRACEBACKS_HINT}):"]
        return lines + [f"  task {f.task} {f.item}: {f.status}: {f.error}"
                        for f in self.failures.values()]

    def traceback(self, task: int) -> str:
        """The kept traceback of a listed failure (its tail), or its message."""
        failure = self.failures.get(task)
        if failure is None:
            return ""
        text = failure.traceback or failure.error
        return text if len(text) <= TRACEBACK_CHARS else "…" + text[-TRACEBACK_CHARS:]

    def _engines(self, snap: RunSnapshot) -> list[dict]:
        stats = self._processes.stats(snap.engines)
        rows = []
        for engine in sorted(snap.engines, key=lambda e: e.id):
            cpu, memory = stats.get(engine.id, (None, None))
            rows.append({
                "id": engine.id, "host": engine.host or "?", "job": engine.job or "",
                "state": engine.state, "done": engine.done, "failed": engine.failed,
                "load": f"{engine.busy_s / snap.elapsed_s:.0%}" if snap.elapsed_s else "–",
                "running": _running(engine), "for": fmt.seconds(engine.running_for_s),
                "cpu": fmt.cores(cpu), "memory": fmt.size(memory)})
        for refused in snap.not_granted:  # engines given up on: a row each, with the reason
            rows.append({"id": "–", "host": "–", "job": refused.job or "–",
                         "state": "not granted", "done": "", "failed": "", "load": "",
                         "running": refused.reason, "for": fmt.seconds(refused.waited_s),
                         "cpu": "", "memory": ""})
        return rows


def counts_line(snap: RunSnapshot) -> str:
    """The live counts, then running, timed out, retried, ETA, tasks per second, and what the
    run ships once per host (while it ships, and how long it took)."""
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
    shipping = snap.shipping
    if shipping.now is not None:
        parts.append(f"shipping {shipping.now} to the engines' hosts…")
    parts += [shipment_text(shipment) for shipment in shipping.shared]
    return " · ".join(parts)


def _row(row) -> list:
    return [row.task, row.item, row.status, row.value]


def _running(engine: EngineSnapshot) -> str:
    if engine.running_task is None:
        return ""
    return f"#{engine.running_task}: {engine.running_item}"


class _LocalProcesses:
    """CPU and memory of the engines on this host, from one cached psutil.Process per pid."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def stats(self, engines: tuple[EngineSnapshot, ...]) -> dict[int, tuple[float, int]]:
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
