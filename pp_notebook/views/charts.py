"""The dashboard's two charts as fixed-size aggregates, folded from Run snapshots.

The timeline keeps busy seconds and status counts per engine in BINS time bins (pairs of bins
merge when the run outgrows its span), plus every attempt while there are at most TASK_BARS of
them, so small runs hover task by task. The histogram counts durations in log-spaced bins.
Memory and the compact `state()` each sends depend on the engine count, never the task count;
the live widget (widgets/dashboard.js) and the final picture (static.py) both draw from it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from ..snapshot import FAILED, Mark, RunSnapshot

BINS = 100
TASK_BARS = 200
"""Up to this many attempts the timeline has one bar per attempt; beyond, one per bin run."""


def kind(status: str) -> str:
    """The colour family of an attempt: `ok`, `failed` or `cancelled` (not a failure)."""
    return "failed" if status in FAILED else "cancelled" if status == "cancelled" else "ok"


@dataclass
class _Lane:
    """One engine's bins: busy seconds per colour family, attempts per status."""

    busy: dict[str, list[float]]
    counts: list[Counter] = field(default_factory=list)


class Timeline:
    """Busy time per engine and time bin, with each bin's status mix; bounded by
    engines × BINS (plus at most TASK_BARS single attempts while the run is small)."""

    def __init__(self, bins: int = BINS) -> None:
        self.bins = bins
        self.span_s = 1.0
        self.lanes: dict[int, _Lane] = {}
        self.tasks: list[Mark] | None = []  # every attempt, until there are too many
        self.end_s = 0.0  # the latest end of an attempt folded in
        self._seen = 0
        self._folded_busy: dict[int, float] = {}  # per engine: busy seconds accounted for
        self._folded_done: dict[int, int] = {}  # per engine: attempts accounted for

    def update(self, snapshot: RunSnapshot) -> list[Mark]:
        """Fold in the attempts finished since the last call; returns them (for the histogram).

        Attempts that already left the snapshot's window (very many tiny tasks between two
        frames) are not lost: each engine's busy time and attempts they leave unexplained are
        drawn as ok work just before now.
        """
        new = snapshot.marks_total - self._seen
        fresh = list(snapshot.marks[max(0, len(snapshot.marks) - new):]) if new else []
        self._seen = snapshot.marks_total
        for mark in fresh:
            self.add(mark.engine, mark.start_s, mark.duration_s, mark.status)
        if self.tasks is not None:
            self.tasks += fresh
            if len(fresh) < new or len(self.tasks) > TASK_BARS:
                self.tasks = None
        if len(fresh) < new:
            for engine in snapshot.engines:
                missing = engine.busy_s - self._folded_busy.get(engine.id, 0.0)
                if missing > 0:
                    count = max(engine.done - self._folded_done.get(engine.id, 0), 1)
                    self.add(engine.id, max(0.0, snapshot.elapsed_s - missing), missing, "ok",
                             count)
        for engine in snapshot.engines:
            self._lane(engine.id)
        return fresh

    def _lane(self, engine: int) -> _Lane:
        lane = self.lanes.get(engine)
        if lane is None:
            lane = self.lanes[engine] = _Lane(
                {name: [0.0] * self.bins for name in ("ok", "failed", "cancelled")},
                [Counter() for _ in range(self.bins)])
        return lane

    def add(self, engine: int, start_s: float, duration_s: float, status: str,
            count: int = 1) -> None:
        """Spread `count` attempts' run time over the bins it covers; count them where
        they started."""
        self._folded_busy[engine] = self._folded_busy.get(engine, 0.0) + duration_s
        self._folded_done[engine] = self._folded_done.get(engine, 0) + \
            count * (status != "cancelled")
        start, end = max(0.0, start_s), max(0.0, start_s + duration_s)
        self.end_s = max(self.end_s, end)
        while end > self.span_s:
            self._double()
        lane = self._lane(engine)
        width = self.span_s / self.bins
        index = min(int(start / width), self.bins - 1)
        lane.counts[index][status] += count
        series = lane.busy[kind(status)]
        while start < end and index < self.bins:
            stop = min(end, (index + 1) * width)
            series[index] += stop - start
            start, index = stop, index + 1

    def _double(self) -> None:
        half = self.bins // 2
        for lane in self.lanes.values():
            for series in lane.busy.values():
                series[:] = [series[2 * i] + series[2 * i + 1] for i in range(half)] + \
                    [0.0] * (self.bins - half)
            lane.counts[:] = [lane.counts[2 * i] + lane.counts[2 * i + 1]
                              for i in range(half)] + [Counter() for _ in range(half)]
        self.span_s *= 2

    def state(self, snapshot: RunSnapshot) -> dict:
        """What both views draw: x from 0 to `span_s` seconds, one lane per engine, and bars.

        `mode` "tasks": each bar is `[lane, start_s, duration_s, status, task, item]`.
        `mode` "bins": each bar is `[lane, start_s, duration_s, kind, busy share, attempts,
        {status: attempts}]`: adjacent bins of one kind and (quartered) busy share merged.
        `running`: `[lane, start_s]` of each task still running.
        """
        x_max = max(snapshot.elapsed_s, self.end_s, 1e-3)
        lanes = sorted(self.lanes)
        row = {engine: i for i, engine in enumerate(lanes)}
        bars: list[list]
        if self.tasks is not None:
            bars = [[row[m.engine], round(m.start_s, 4), round(m.duration_s, 4), m.status,
                     m.task, m.item] for m in self.tasks if m.engine in row]
        else:
            bars = [bar for engine in lanes for bar in self._bin_bars(row[engine], engine)]
        running = [] if snapshot.done else [
            [row[e.id], round(max(0.0, x_max - e.running_for_s), 4)]
            for e in snapshot.engines if e.running_for_s is not None and e.id in row]
        return {"span_s": round(x_max, 4), "lanes": lanes,
                "mode": "bins" if self.tasks is None else "tasks", "bars": bars,
                "running": running}

    def _bin_bars(self, index: int, engine: int) -> list[list]:
        lane = self.lanes[engine]
        width = self.span_s / self.bins
        bars: list[list] = []
        for i in range(self.bins):
            busy = {name: series[i] for name, series in lane.busy.items()}
            total = sum(busy.values())
            if total <= 0 and not lane.counts[i]:
                continue
            colour = "failed" if busy["failed"] > 0 else "ok" if busy["ok"] > 0 \
                else "cancelled"
            share = max(0.25, round(min(1.0, total / width) * 4) / 4)
            last = bars[-1] if bars else None
            if last is not None and last[3] == colour and last[4] == share \
                    and math.isclose(last[1] + last[2], i * width):
                last[2] = round(last[2] + width, 4)
                last[5] += sum(lane.counts[i].values())
                last[6].update(lane.counts[i])
                continue
            bars.append([index, round(i * width, 4), round(width, 4), colour, share,
                         sum(lane.counts[i].values()), Counter(lane.counts[i])])
        for bar in bars:
            bar[6] = dict(bar[6])
        return bars


class Histogram:
    """Counts of task durations in log-spaced bins (10 per decade, 10 µs to 1 day)."""

    PER_DECADE = 10
    LOW = -5  # 10 µs
    HIGH = 5  # ~1 day

    def __init__(self) -> None:
        size = (self.HIGH - self.LOW) * self.PER_DECADE
        self.counts = {name: [0] * size for name in ("ok", "failed", "cancelled")}

    def add(self, duration_s: float, status: str) -> None:
        """Count one attempt."""
        position = (math.log10(max(duration_s, 1e-9)) - self.LOW) * self.PER_DECADE
        index = min(max(int(position), 0), len(self.counts["ok"]) - 1)
        self.counts[kind(status)][index] += 1

    def edge(self, index: int) -> float:
        return 10 ** (self.LOW + index / self.PER_DECADE)

    def state(self) -> dict:
        """The occupied range only: `edges` (one more than bins, seconds) and the counts per
        colour family in each bin; empty lists before any attempt has finished."""
        totals = [sum(column) for column in zip(*self.counts.values())]
        used = [i for i, n in enumerate(totals) if n]
        if not used:
            return {"edges": [], "ok": [], "failed": [], "cancelled": []}
        first, last = used[0], used[-1] + 1
        return {"edges": [float(f"{self.edge(i):.3g}") for i in range(first, last + 1)],
                **{name: series[first:last] for name, series in self.counts.items()}}
