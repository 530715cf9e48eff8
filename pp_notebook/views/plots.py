"""A finished run as a matplotlib Figure: each engine's task timeline and the duration histogram.

The Figure is closed in pyplot before it is returned, so a notebook shows it once (as the
cell's value) and users can still `fig.savefig(...)` it.
"""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..records import TaskRecord, table_of
from ..snapshot import FAILED
from ..tasktable import CODES, NONE, STATUS_NAMES, TaskTable
from .theme import STATUS_COLOURS


def plot_run(records: TaskTable | Iterable[TaskRecord], started_at: float) -> Figure:
    """Left: one lane per engine, one bar per finished task coloured by status, x = seconds
    since the run started at `started_at` (client clock). Right: the histogram of task
    durations. Reads the table's columns, not a TaskRecord per task."""
    table = table_of(records)
    timed = np.flatnonzero((table.engine != NONE) & ~np.isnan(table.started)
                           & ~np.isnan(table.duration_s))
    engines = np.unique(table.engine[timed]).tolist()
    fig, (timeline, histogram) = plt.subplots(
        1, 2, figsize=(10, 1.6 + 0.35 * max(len(engines), 2)),
        gridspec_kw={"width_ratios": [3, 1]}, layout="constrained")
    plt.close(fig)
    statuses = STATUS_NAMES[table.status[timed]]
    _draw_timeline(timeline, table, timed, engines, started_at)
    _draw_histogram(histogram, table.duration_s[timed].tolist(), statuses.tolist())
    return fig


def _draw_timeline(ax, table: TaskTable, timed: np.ndarray, engines: list[int],
                   t0: float) -> None:
    hosts = dict(zip(table.engine[timed].tolist(), table.host_names()[timed]))  # the last one
    codes = table.status[timed]
    statuses = sorted(set(STATUS_NAMES[codes]), key=list(STATUS_COLOURS).index)
    for lane, engine in enumerate(engines):
        mine = timed[table.engine[timed] == engine]
        for status in statuses:
            tasks = mine[table.status[mine] == CODES[status]]
            bars = list(zip((table.started[tasks] - t0).tolist(),
                            table.duration_s[tasks].tolist()))
            if bars:
                ax.broken_barh(bars, (lane - 0.4, 0.8), facecolors=STATUS_COLOURS[status],
                               edgecolor="white", linewidth=0.3)
    ax.set_yticks(range(len(engines)),
                  [f"engine {e}" + (f"\n{hosts[e]}" if hosts[e] else "") for e in engines],
                  fontsize=8)
    ax.set_ylim(-0.6, max(len(engines), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds since the run started")
    ax.set_title("tasks per engine", fontsize=10, loc="left")
    ax.legend(handles=[Patch(color=STATUS_COLOURS[s], label=s) for s in statuses],
              loc="lower right", bbox_to_anchor=(1, 1), fontsize=8, frameon=False,
              ncols=max(len(statuses), 1), borderaxespad=0)


def _draw_histogram(ax, durations: list[float], statuses: list[str]) -> None:
    ax.set_title("task durations", fontsize=10)
    ax.set_xlabel("seconds")
    ax.set_ylabel("tasks")
    if not durations:
        ax.text(0.5, 0.5, "no task finished", ha="center", va="center", transform=ax.transAxes)
        return
    values = np.maximum(np.asarray(durations), 1e-6)
    low, high = values.min(), values.max()
    logarithmic = high / low > 100
    bins = (np.geomspace(low, high * 1.0001, 30) if logarithmic
            else np.linspace(low, high * 1.0001 + 1e-9, 30))
    groups = {"ok": ("ok",), "failed": FAILED, "cancelled": ("cancelled",)}
    kinds = np.asarray(statuses)
    ax.hist([values[np.isin(kinds, members)] for members in groups.values()], bins=bins,
            stacked=True, label=list(groups),
            color=[STATUS_COLOURS["ok"], STATUS_COLOURS["error"], STATUS_COLOURS["cancelled"]])
    if logarithmic:
        ax.set_xscale("log")
