"""TaskRecords, and what is built from them: the merged DataFrame, the failures, the summary.

Merge rules (one input item, in input order):
- a dict or Series result becomes one row, its keys the columns;
- a DataFrame result contributes all its rows;
- anything else (a number, a list, None, ...) goes in a `result` column;
- a failed item gives one row with its error and no values.
Metadata columns come first: `task` (position of the item in the input), `status`,
`engine`, `host`, `duration_s`, `attempts`, `error`. A result key with the same name as a
metadata column keeps its name; the metadata column is then prefixed with `pp_`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import pandas as pd

FAILED = ("error", "timeout", "memory", "invalid", "lost", "cancelled")
METADATA_COLUMNS = ("task", "status", "engine", "host", "duration_s", "attempts", "error")


@dataclass(slots=True)
class TaskRecord:
    """Everything known about one item: its result or error, where and when it ran."""

    task: int
    item: Any
    status: str = "pending"  # pending | ok | error | timeout | memory | invalid | lost | cancelled
    value: Any = None
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    output: str = ""
    engine: int | None = None
    host: str | None = None
    pid: int | None = None
    started: float | None = None  # the client's clock (epoch seconds)
    duration_s: float | None = None  # measured on the engine
    attempts: int = 0
    resumed: bool = False  # taken from a checkpoint, not run again

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    @property
    def message(self) -> str | None:
        """`Type: message` of a failure, as the `error` column shows it."""
        return error_text(self.error_type, self.error)


def error_text(error_type: str | None, error: str | None) -> str | None:
    """`Type: message`, or whichever of the two there is."""
    if error_type is None:
        return error
    return f"{error_type}: {error}" if error else error_type


def merged_frame(records: list[TaskRecord], schema: dict | None = None) -> pd.DataFrame:
    """One DataFrame of every record's result and metadata, in input order."""
    parts: list[tuple[dict | pd.DataFrame, list[TaskRecord]]] = []  # values and their records
    rows: list[dict] = []
    owners: list[TaskRecord] = []

    def flush_rows() -> None:
        if owners:
            keys = dict.fromkeys(key for row in rows for key in row)  # in first-seen order
            parts.append(({key: [row.get(key) for row in rows] for key in keys}, owners[:]))
            rows.clear()
            owners.clear()

    for record in records:
        value = record.value if record.status == "ok" else None
        if isinstance(value, pd.DataFrame):
            flush_rows()
            frame = value.reset_index(drop=True)
            parts.append((frame, [record] * len(frame)))
            continue
        if record.status != "ok":
            rows.append({})
        elif isinstance(value, dict):
            rows.append(value)
        elif isinstance(value, pd.Series):
            rows.append(value.to_dict())
        else:
            rows.append({"result": value})
        owners.append(record)
    flush_rows()
    # One rule for every part: a metadata name any result uses is prefixed everywhere.
    clashing = set(METADATA_COLUMNS) & {key for values, _ in parts for key in values.keys()}
    pieces = [_with_metadata(values, owners, clashing) for values, owners in parts]
    if not pieces:
        frame = pd.DataFrame({name: [] for name in METADATA_COLUMNS})
    elif len(pieces) == 1:
        frame = pieces[0]
    else:
        frame = pd.concat(pieces, ignore_index=True)
    return _apply_schema(frame, schema) if schema else frame


def _columns(records: list[TaskRecord], columns: dict[str, str]) -> dict:
    """{column: values of a TaskRecord attribute}; engine ids as nullable integers."""
    values = {name: list(map(attrgetter(attr), records)) for name, attr in columns.items()}
    if "engine" in values:
        values["engine"] = pd.array(values["engine"], dtype="Int64")
    return values


_METADATA_ATTRS = {name: name for name in METADATA_COLUMNS} | {"error": "message"}
_ERROR_ATTRS = {name: name for name in ("task", "item", "status", "error_type", "error",
                                         "engine", "attempts", "traceback", "output")}


def _with_metadata(values: dict | pd.DataFrame, owners: list[TaskRecord],
                   clashing: set[str]) -> pd.DataFrame:
    """The metadata columns of `owners` (`pp_`-prefixed where in `clashing`), then the value
    columns (a dict of lists, or a frame whose rows all belong to one record)."""
    metadata = _columns(owners, _METADATA_ATTRS)
    named = {(f"pp_{k}" if k in clashing else k): v for k, v in metadata.items()}
    if isinstance(values, dict):
        return pd.DataFrame(named | values, index=range(len(owners)))
    frame = pd.DataFrame(named, index=values.index)
    return pd.concat([frame, values], axis=1) if len(values.columns) else frame


def _apply_schema(frame: pd.DataFrame, schema: dict) -> pd.DataFrame:
    """Cast declared columns; integer and bool columns with gaps become pandas' nullable types."""
    nullable = {"i": "Int64", "u": "UInt64", "b": "boolean"}
    for name, dtype in schema.items():
        if name not in frame.columns:
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype=object)
        try:
            frame[name] = frame[name].astype(dtype)
        except (TypeError, ValueError):
            kind = getattr(pd.api.types.pandas_dtype(dtype), "kind", "")
            frame[name] = frame[name].astype(nullable.get(kind, object))
    return frame


def errors_frame(records: list[TaskRecord]) -> pd.DataFrame:
    """One row per failed item: which item, what failed, where, and the full traceback."""
    return pd.DataFrame(_columns([r for r in records if r.failed], _ERROR_ATTRS))


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

    def line(self) -> str:
        """`1000 tasks · 998 ok · 2 failed · 12.3 s · speedup 1.9×`"""
        parts = [f"{self.tasks} tasks", f"{self.counts.get('ok', 0)} ok"]
        if self.resumed:
            parts.append(f"{self.resumed} resumed from the checkpoint")
        if self.failed:
            detail = ", ".join(f"{self.counts[s]} {s}" for s in FAILED if self.counts.get(s))
            parts.append(f"{self.failed} failed ({detail})")
        pending = self.counts.get("pending", 0)
        if pending:
            parts.append(f"{pending} pending")
        parts += [f"{self.wall_s:.1f} s", f"speedup {self.speedup:.1f}×"]
        return " · ".join(parts)

    def _repr_html_(self) -> str:
        """Plain HTML, so the summary stays readable in saved notebooks (GitHub, nbviewer)."""
        from .summary_html import summary_html
        return summary_html(self)

    def __str__(self) -> str:
        lines = [self.line(), f"summed task time {self.task_s:.2f} s on {self.engines} engines, "
                              f"efficiency {self.efficiency:.0%}"]
        if len(self.per_engine):
            lines.append(self.per_engine.to_string())
        return "\n".join(lines)


def summarize(records: list[TaskRecord], wall_s: float, engines_used: int | None = None,
              slowest: int = 5) -> RunSummary:
    """Wall time, summed task time, speedup, and per engine: tasks, busy share, failures."""
    counts: dict[str, int] = {}
    per_engine: dict[int, dict] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.engine is None or r.resumed:  # never ran, or ran in an earlier run
            continue
        row = per_engine.setdefault(r.engine, {"host": r.host, "tasks": 0, "failed": 0,
                                               "busy_s": 0.0})
        row["tasks"] += 1
        row["failed"] += r.failed
        row["busy_s"] += r.duration_s or 0.0
    table = pd.DataFrame.from_dict(per_engine, orient="index",
                                   columns=["host", "tasks", "failed", "busy_s"])
    table.index.name = "engine"
    table = table.sort_index()
    table["utilisation"] = table["busy_s"] / wall_s if wall_s > 0 else 0.0
    table["failure_rate"] = (table["failed"] / table["tasks"]).where(table["tasks"] > 0, 0.0)
    timed = [r for r in records if r.duration_s is not None and not r.resumed]
    timed.sort(key=lambda r: r.duration_s, reverse=True)
    slow = pd.DataFrame({"task": [r.task for r in timed[:slowest]],
                         "duration_s": [r.duration_s for r in timed[:slowest]],
                         "engine": [r.engine for r in timed[:slowest]],
                         "status": [r.status for r in timed[:slowest]]})
    return RunSummary(tasks=len(records), counts=counts, wall_s=wall_s,
                      resumed=sum(r.resumed for r in records),
                      task_s=float(table["busy_s"].sum()) if len(table) else 0.0,
                      engines=engines_used if engines_used is not None else len(table),
                      per_engine=table, slowest=slow)
