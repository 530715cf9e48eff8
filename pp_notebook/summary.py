"""The figures of a run: wall time, speedup, and how each engine fared; as text and as plain
HTML that stays readable in saved notebooks (GitHub, nbviewer), with pandas' own tables."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape

import numpy as np
import pandas as pd

from . import fmt
from .batching import ITEM_OVERHEAD_S
from .records import TaskRecord, table_of
from .snapshot import FAILED, Shipment
from .tasktable import CANCELLED, NONE, OK, STATUS_NAMES, STATUSES, TaskTable

TOO_SHORT_FACTOR = 10
"""A run whose median task is shorter than this many times ITEM_OVERHEAD_S measures overhead,
not speedup: its summary says so instead."""


@dataclass(frozen=True)
class RunSummary:
    """The figures of a run: time, speedup, and how each engine fared."""

    tasks: int
    counts: dict[str, int]
    wall_s: float
    task_s: float  # summed run time of all finished tasks, measured on the engines
    engines: int
    per_engine: pd.DataFrame = field(repr=False)
    slowest: pd.DataFrame = field(repr=False)
    resumed: int = 0  # ok items taken from a checkpoint
    shipments: tuple[Shipment, ...] = ()  # the shared values: shipped, or reused
    median_task_s: float | None = None

    @property
    def speedup(self) -> float:
        """Summed task time over wall time: how many engines' worth of work ran at once."""
        return self.task_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def efficiency(self) -> float:
        """Speedup per engine (1.0 = every engine busy the whole time)."""
        return self.speedup / self.engines if self.engines else 0.0

    @property
    def failed(self) -> int:
        return sum(self.counts.get(s, 0) for s in FAILED)

    @property
    def too_short(self) -> bool:
        """The median task is too short for speedup to mean anything: overhead dominates."""
        return self.median_task_s is not None \
            and self.median_task_s < TOO_SHORT_FACTOR * ITEM_OVERHEAD_S

    def speed_text(self) -> str:
        """`speedup 1.9×`, or why a speedup would mislead for microsecond tasks."""
        if self.too_short and self.median_task_s is not None:
            return (f"median task {self.median_task_s * 1e6:.0f} µs, under {TOO_SHORT_FACTOR}× "
                    f"the ~{ITEM_OVERHEAD_S * 1e6:.0f} µs overhead per task: speedup not "
                    "meaningful; give each task more work")
        return f"speedup {self.speedup:.1f}×"

    def line(self) -> str:
        """`1000 tasks · 998 ok · 2 failed (2 error) · 12.3 s · speedup 1.9×`"""
        parts = [f"{self.tasks} tasks", f"{self.counts.get('ok', 0)} ok"]
        if self.resumed:
            parts.append(f"{self.resumed} resumed from the checkpoint")
        if self.failed:
            parts.append(f"{self.failed} failed ({failure_detail(self.counts)})")
        for status in ("cancelled", "pending"):
            if self.counts.get(status):
                parts.append(f"{self.counts[status]} {status}")
        parts += [f"{self.wall_s:.1f} s", self.speed_text()]
        return " · ".join(parts + [shipment_text(s) for s in self.shipments])

    def shipping_advice(self) -> str | None:
        """When shipping shared values took longer than the tasks themselves: what to do."""
        seconds = sum(s.seconds for s in self.shipments)
        if not seconds or seconds <= self.task_s:
            return None
        return (f"shipping took {fmt.seconds(seconds)}, longer than the tasks "
                f"({fmt.seconds(self.task_s)}): run again with the same, unchanged values "
                "to reuse them, or share only the columns the tasks read")

    def _repr_html_(self) -> str:
        """Plain HTML, so the summary stays readable in saved notebooks (GitHub, nbviewer)."""
        return summary_html(self)

    def __str__(self) -> str:
        lines = [self.line()]
        if not self.too_short:
            lines.append(f"summed task time {self.task_s:.2f} s on {self.engines} engines, "
                         f"efficiency {self.efficiency:.0%}")
        advice = self.shipping_advice()
        if advice:
            lines.append(advice)
        if len(self.per_engine):
            lines.append(self.per_engine.to_string())
        return "\n".join(lines)


def failure_detail(counts: dict[str, int]) -> str:
    """`2 error, 1 timeout`: the failures by status."""
    return ", ".join(f"{counts[s]} {s}" for s in FAILED if counts.get(s))


def shipment_text(shipment: Shipment) -> str:
    """`shipped df_big (153 MB) once to 1 host in 0.30 s`, or `… reused from the previous run`."""
    size = fmt.size(shipment.nbytes)
    if shipment.reused:
        return f"{shipment.name} ({size}) reused from the previous run"
    hosts = f"{shipment.hosts} host{'s' if shipment.hosts != 1 else ''}"
    return f"shipped {shipment.name} ({size}) once to {hosts} in {shipment.seconds:.2f} s"


def summarize(records: TaskTable | Iterable[TaskRecord], wall_s: float,
              engines_used: int | None = None, slowest: int = 5,
              shipments: tuple[Shipment, ...] = ()) -> RunSummary:
    """Wall time, summed task time, speedup, and per engine: tasks, busy share, failures
    (cancelled tasks count as tasks, not as failures). Reads the table's columns: the same
    cost per task for 10 or 10 million tasks."""
    table = table_of(records)
    codes, first = np.unique(table.status, return_index=True)
    counts = {STATUSES[code]: int(np.count_nonzero(table.status == code))
              for code in codes[np.argsort(first)]}  # in order of first sight
    durations = np.nan_to_num(table.duration_s)  # an unknown duration counts as 0 s busy
    ran = (table.engine != NONE) & ~table.resumed  # not in an earlier run
    engines, first_task = np.unique(table.engine[ran], return_index=True)
    tasks = np.flatnonzero(ran)
    lanes = np.searchsorted(engines, table.engine[tasks])
    hosts = table.host_names()

    def per_lane(weights: np.ndarray) -> list:
        return np.bincount(lanes, weights[tasks], minlength=len(engines)).tolist()

    failed = table.failed()
    busy = per_lane(durations)  # summed in task order, as a running total would be
    per_engine = {int(engine): {"host": hosts[tasks[first]], "tasks": int(count),
                                "failed": int(fails), "cancelled": int(cancels),
                                "busy_s": busy_s}
                  for engine, first, count, fails, cancels, busy_s in zip(
                      engines, first_task, np.bincount(lanes, minlength=len(engines)),
                      per_lane(failed), per_lane(table.status == CANCELLED), busy)}
    frame = pd.DataFrame.from_dict(per_engine, orient="index",
                                   columns=["host", "tasks", "failed", "cancelled", "busy_s"])
    frame.index.name = "engine"
    frame = frame.sort_index()
    frame["utilisation"] = frame["busy_s"] / wall_s if wall_s > 0 else 0.0
    ran_to_end = frame["tasks"] - frame["cancelled"]
    frame["failure_rate"] = (frame["failed"] / ran_to_end).where(ran_to_end > 0, 0.0)
    timed = np.flatnonzero(~np.isnan(table.duration_s) & ~table.resumed)
    ok_durations = table.duration_s[timed[table.status[timed] == OK]]
    median = float(np.median(ok_durations)) if len(ok_durations) else None
    slow = timed[np.argsort(-table.duration_s[timed], kind="stable")[:slowest]]
    engine_of = [None if engine == NONE else engine for engine in table.engine[slow].tolist()]
    slow_frame = pd.DataFrame({"task": slow.tolist(),
                               "duration_s": table.duration_s[slow].tolist(), "engine": engine_of,
                               "status": STATUS_NAMES[table.status[slow]].tolist()})
    return RunSummary(tasks=len(table), counts=counts, wall_s=wall_s,
                      resumed=int(table.resumed.sum()),
                      task_s=float(frame["busy_s"].sum()) if len(frame) else 0.0,
                      engines=engines_used if engines_used is not None else len(frame),
                      per_engine=frame, slowest=slow_frame, median_task_s=median,
                      shipments=tuple(shipments))


def summary_html(summary: RunSummary, *, engines: bool = True) -> str:
    """Headline figures, the per-engine table (unless `engines=False`) and the slowest tasks."""
    failed = failure_detail(summary.counts)
    short = summary.too_short  # microsecond tasks: speedup and efficiency would mislead
    figures = pd.DataFrame([{
        "tasks": summary.tasks, "ok": summary.counts.get("ok", 0),
        "failed": f"{summary.failed} ({failed})" if failed else "0",
        "cancelled": summary.counts.get("cancelled", 0),
        "wall time": fmt.seconds(summary.wall_s), "summed task time": fmt.seconds(summary.task_s),
        "speedup": "–" if short else f"{summary.speedup:.2f}×", "engines": summary.engines,
        "efficiency": "–" if short else f"{summary.efficiency:.0%}"}])
    parts = [f"<p><b>pp_notebook run</b>: {escape(summary.line())}</p>", _table(figures)]
    advice = summary.shipping_advice()
    if advice:
        parts.append(f"<p>{escape(advice)}</p>")
    if engines and len(summary.per_engine):
        table = summary.per_engine
        parts += ["<p><b>Per engine</b></p>", _table(pd.DataFrame({
            "engine": table.index, "host": table["host"], "tasks": table["tasks"],
            "failed": table["failed"], "cancelled": table["cancelled"],
            "busy": table["busy_s"].map(fmt.seconds),
            "utilisation": table["utilisation"].map("{:.0%}".format),
            "failure rate": table["failure_rate"].map("{:.0%}".format)}))]
    if len(summary.slowest):
        slow = summary.slowest
        parts += ["<p><b>Slowest tasks</b></p>", _table(pd.DataFrame({
            "task": slow["task"], "duration": slow["duration_s"].map(fmt.seconds),
            "engine": slow["engine"], "status": slow["status"]}))]
    return "\n".join(parts)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, escape=True)
