"""Live charts for the dashboard, fed from Run snapshots and drawn as small inline SVG.

Both keep fixed-size aggregates, never one entry per task: the timeline holds busy seconds per
engine in BINS time bins (pairs of bins merge when the run outgrows its span), the histogram
counts durations in log-spaced bins. Memory and drawing cost depend on the engine count only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from html import escape

from .. import fmt
from ..snapshot import FAILED, Mark, RunSnapshot
from .theme import CANCELLED_COLOUR, FAILED_COLOUR, RUNNING_COLOUR, STATUS_COLOURS

BINS = 200
WIDTH = 520
LABEL_W = 34
LANE_H = 12
LANE_GAP = 3
AXIS_H = 16
FONT = 'font-family="sans-serif" font-size="10" fill="#555"'
_Lane = tuple[list[float], list[float], list[float]]
"""One engine's busy seconds per time bin: ok, failed and cancelled."""


def _kind(status: str) -> int:
    """Which series an attempt goes in: 0 ok, 1 failed, 2 cancelled (not a failure)."""
    return 1 if status in FAILED else 2 if status == "cancelled" else 0


class Timeline:
    """Busy time per engine and time bin, split into ok, failed and cancelled; bounded by
    engines × BINS."""

    def __init__(self, bins: int = BINS) -> None:
        self.bins = bins
        self.span_s = 1.0
        self.lanes: dict[int, _Lane] = {}  # engine -> (ok, failed, cancelled)
        self._seen = 0
        self._folded_busy: dict[int, float] = {}  # per engine: busy seconds accounted for
        self.end_s = 0.0  # the latest end of an attempt folded in

    def update(self, snapshot: RunSnapshot) -> list[Mark]:
        """Fold in the attempts finished since the last call; returns them (for the histogram).

        Attempts that already left the snapshot's window (very many tiny tasks between two
        frames) are not lost: each engine's busy time they leave unexplained is drawn as ok
        work just before now.
        """
        new = snapshot.marks_total - self._seen
        fresh = list(snapshot.marks[max(0, len(snapshot.marks) - new):]) if new else []
        self._seen = snapshot.marks_total
        for mark in fresh:
            self.add(mark.engine, mark.start_s, mark.duration_s, mark.status)
        if len(fresh) < new:
            for engine in snapshot.engines:
                missing = engine.busy_s - self._folded_busy.get(engine.id, 0.0)
                if missing > 0:
                    self.add(engine.id, max(0.0, snapshot.elapsed_s - missing), missing, "ok")
        for engine in snapshot.engines:
            self._lane(engine.id)
        return fresh

    def _lane(self, engine: int) -> _Lane:
        return self.lanes.setdefault(engine, ([0.0] * self.bins, [0.0] * self.bins,
                                              [0.0] * self.bins))

    def add(self, engine: int, start_s: float, duration_s: float, status: str) -> None:
        """Spread one attempt's run time over the bins it covers."""
        self._folded_busy[engine] = self._folded_busy.get(engine, 0.0) + duration_s
        start, end = max(0.0, start_s), max(0.0, start_s + duration_s)
        self.end_s = max(self.end_s, end)
        while end > self.span_s:
            self._double()
        series = self._lane(engine)[_kind(status)]
        width = self.span_s / self.bins
        index = min(int(start / width), self.bins - 1)
        while start < end and index < self.bins:
            stop = min(end, (index + 1) * width)
            series[index] += stop - start
            start, index = stop, index + 1

    def _double(self) -> None:
        half = self.bins // 2
        for lane in self.lanes.values():
            for series in lane:
                merged = [series[2 * i] + series[2 * i + 1] for i in range(half)]
                series[:] = merged + [0.0] * (self.bins - half)
        self.span_s *= 2

    def svg(self, snapshot: RunSnapshot) -> str:
        """One lane per engine: busy share per bin as opacity, failed time in red, running
        tasks as a light bar up to now; x is seconds since the run started."""
        x_max = max(snapshot.elapsed_s, self.end_s, 1e-3)
        scale = (WIDTH - LABEL_W - 8) / x_max
        width = self.span_s / self.bins
        running = {e.id: e.running_for_s for e in snapshot.engines if e.running_for_s}
        parts = []
        for row, engine in enumerate(sorted(self.lanes)):
            y = row * (LANE_H + LANE_GAP)
            parts.append(f'<text x="0" y="{y + LANE_H - 2}" {FONT}>e{engine}</text>'
                         f'<rect x="{LABEL_W}" y="{y}" width="{WIDTH - LABEL_W - 8}" '
                         f'height="{LANE_H}" fill="#f3f3f3"/>')
            for first, last, colour, opacity in _runs(*self.lanes[engine], width):
                x = LABEL_W + first * width * scale
                w = max((last - first + 1) * width * scale, 1.0)
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{LANE_H}" '
                             f'fill="{colour}" fill-opacity="{opacity}"/>')
            if engine in running and not snapshot.done:
                start = max(0.0, x_max - running[engine])
                parts.append(f'<rect x="{LABEL_W + start * scale:.1f}" y="{y + 2}" '
                             f'width="{max((x_max - start) * scale, 1.0):.1f}" '
                             f'height="{LANE_H - 4}" fill="{RUNNING_COLOUR}"/>')
        height = len(self.lanes) * (LANE_H + LANE_GAP) + AXIS_H
        axis_y = height - 4
        parts.append(f'<text x="{LABEL_W}" y="{axis_y}" {FONT}>0</text>'
                     f'<text x="{WIDTH - 8}" y="{axis_y}" text-anchor="end" {FONT}>'
                     f'{escape(fmt.seconds(x_max))}</text>')
        return _svg(WIDTH, height, "".join(parts), "task timeline per engine")


def _runs(ok: list[float], failed: list[float], cancelled: list[float],
          width: float) -> Iterator[tuple]:
    """Adjacent bins of equal colour and (quartered) busy share, merged into one bar each.
    A bin with failed time is red; one with only cancelled time grey."""
    current = None
    for index, (good, bad, dropped) in enumerate(zip(ok, failed, cancelled)):
        share = min(1.0, (good + bad + dropped) / width)
        key = None
        if share > 0:
            colour = FAILED_COLOUR if bad > 0 else STATUS_COLOURS["ok"] if good > 0 \
                else CANCELLED_COLOUR
            key = (colour, max(0.25, round(share * 4) / 4))
        if current is not None and key == tuple(current[2:]):
            current[1] = index
            continue
        if current is not None:
            yield tuple(current)
        current = [index, index, *key] if key is not None else None
    if current is not None:
        yield tuple(current)


class Histogram:
    """Counts of task durations in log-spaced bins (10 per decade, 10 µs to 1 day)."""

    PER_DECADE = 10
    LOW = -5  # 10 µs
    HIGH = 5  # ~1 day

    def __init__(self) -> None:
        size = (self.HIGH - self.LOW) * self.PER_DECADE
        self.ok = [0] * size
        self.failed = [0] * size
        self.cancelled = [0] * size

    def add(self, duration_s: float, status: str) -> None:
        """Count one attempt."""
        position = (math.log10(max(duration_s, 1e-9)) - self.LOW) * self.PER_DECADE
        index = min(max(int(position), 0), len(self.ok) - 1)
        (self.ok, self.failed, self.cancelled)[_kind(status)][index] += 1

    def edge(self, index: int) -> float:
        return 10 ** (self.LOW + index / self.PER_DECADE)

    def svg(self, width: int = 200, height: int = 90) -> str:
        """Bars of the occupied range of bins, failed counts stacked in red, cancelled grey."""
        totals = [a + b + c for a, b, c in zip(self.ok, self.failed, self.cancelled)]
        used = [i for i, n in enumerate(totals) if n]
        if not used:
            return _svg(width, height, f'<text x="0" y="12" {FONT}>no task finished yet</text>',
                        "task durations")
        first, last = used[0], used[-1]
        count = last - first + 1
        bar_w = width / count
        plot_h = height - AXIS_H
        top = max(totals)
        parts = []
        for i in range(first, last + 1):
            x = (i - first) * bar_w
            for value, base, colour in (
                    (self.ok[i], 0, STATUS_COLOURS["ok"]),
                    (self.failed[i], self.ok[i], FAILED_COLOUR),
                    (self.cancelled[i], self.ok[i] + self.failed[i], CANCELLED_COLOUR)):
                if value:
                    h = max(plot_h * value / top, 1.0)
                    y = plot_h - plot_h * base / top - h
                    parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                                 f'height="{h:.1f}" fill="{colour}"/>')
        parts.append(f'<text x="0" y="{height - 4}" {FONT}>{escape(fmt.seconds(self.edge(first)))}'
                     f'</text><text x="{width}" y="{height - 4}" text-anchor="end" {FONT}>'
                     f'{escape(fmt.seconds(self.edge(last + 1)))}</text>')
        return _svg(width, height, "".join(parts), "task durations (log scale)")


def _svg(width: int, height: int, body: str, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>'
            f'{body}</svg>')
