"""TaskRecords, the read-only view of a run's table that makes them, and what is built from the
table's columns: the merged DataFrame and the failures.

Merge rules (one input item, in input order; the index is `task`, the item's position):
- a dict or Series result becomes one row, its keys the columns;
- a DataFrame result contributes all its rows (the index then repeats that task);
- anything else (a number, a list, None, ...) goes in a `result` column;
- a failed item gives one row with its error and no values.
Columns: first the item's labels (the scalar names a `%%parallel` header binds, or `item` for
`map`'s scalar items), filled on every row so failed rows still say which input they were
for; a result key of the same name stands on successful rows. Then the result's columns, then
the metadata: `status`, `engine`, `host`, `duration_s`, `attempts`, `error` (`<NA>` when ok).
A result or label with a metadata name keeps it; the metadata column (or the index, for
`task`) is then prefixed with `pp_`. Integer and bool columns stay so, nullable where failed
rows leave gaps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, overload

import numpy as np
import pandas as pd

from .snapshot import FAILED, Status
from .tasktable import NONE, OK, STATUS_NAMES, TaskTable

METADATA_COLUMNS = ("status", "engine", "host", "duration_s", "attempts", "error")
INDEX = "task"


@dataclass(slots=True)
class TaskRecord:
    """Everything known about one item: its result or error, where and when it ran."""

    task: int
    item: Any
    status: Status = "pending"
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
        """It ran and did not succeed (a cancelled item did not fail)."""
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


Labels = Callable[[Any], dict]
"""An item's label columns: {name: scalar value}; names whose value is not a scalar are left
out (a row Series from `iterrows()` is no column)."""


class ItemNamed:
    """Labels that are the item itself under one name (`map`'s `item`, `%%parallel x in …`'s
    `x`), when it is a scalar: a whole column of scalar items is labelled at C speed."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, item: Any) -> dict:
        return {self.name: item} if pd.api.types.is_scalar(item) else {}


item_label = ItemNamed("item")
"""`map`'s label: a scalar item is its own `item` column."""


class Records(Sequence[TaskRecord]):
    """`run.records`: a read-only sequence over a run's TaskTable. Each TaskRecord is built
    when asked for, a copy: changing it changes nothing in the run."""

    def __init__(self, table: TaskTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    @overload
    def __getitem__(self, index: int) -> TaskRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[TaskRecord]: ...

    def __getitem__(self, index: int | slice) -> TaskRecord | list[TaskRecord]:
        if isinstance(index, slice):
            return [self[task] for task in range(len(self))[index]]
        return TaskRecord(**self.table.fields(index))

    def __iter__(self) -> Iterator[TaskRecord]:
        return (TaskRecord(**self.table.fields(task)) for task in range(len(self)))

    def __repr__(self) -> str:
        return f"<Records of {len(self)} tasks>"


def table_of(records: TaskTable | Iterable[TaskRecord]) -> TaskTable:
    """The table behind `records`: a run's own, or one made from TaskRecords whose tasks are
    their positions (0, 1, 2, ...)."""
    if isinstance(records, TaskTable):
        return records
    if isinstance(records, Records):
        return records.table
    records = list(records)
    table = TaskTable([record.item for record in records])
    for position, record in enumerate(records):
        if record.task != position:
            raise ValueError(f"record {position} is task {record.task}: a table's tasks are "
                             "their positions, 0, 1, 2, ...")
        table.update(position, **{name: getattr(record, name) for name in _FIELDS})
    return table


_FIELDS = tuple(name for name in TaskRecord.__dataclass_fields__ if name not in ("task", "item"))


def merged_frame(records: TaskTable | Iterable[TaskRecord], schema: dict | None = None,
                 labels: Labels | None = None) -> pd.DataFrame:
    """One DataFrame of every task's labels, result and metadata, in input order.

    It reads the table's columns: 10 million tasks make no TaskRecord (and no dict per row
    where the results are plain values)."""
    table = table_of(records)
    ok = table.status == OK
    values = table.values.tolist()
    labelled = _label_columns(table.items, labels) if labels is not None else {}
    scalars = _all_scalars(table.values, skipna=True)
    frames = [] if scalars else [
        task for task, (value, good) in enumerate(zip(values, ok.tolist()))
        if good and isinstance(value, pd.DataFrame)]
    parts: list[tuple[dict | pd.DataFrame, np.ndarray]] = []
    start = 0
    for task in [*frames, len(table)]:  # rows between DataFrame results, then each of them
        if start < task:
            parts.append((_columns(values[start:task], ok[start:task], scalars),
                          np.arange(start, task)))
        if task < len(table):
            frame = values[task]
            parts.append((frame.reset_index(drop=True), np.full(len(frame), task)))
        start = task + 1
    label_names = list(labelled)
    used = set(label_names) | {key for part, _ in parts for key in part}
    clashing = (set(METADATA_COLUMNS) | {INDEX}) & used
    metadata = _Metadata(table, clashing)
    pieces = [_piece(part, owners, ok[owners], labelled, metadata) for part, owners in parts]
    index_name = f"pp_{INDEX}" if INDEX in clashing else INDEX
    if not pieces:
        frame = pd.DataFrame(metadata.of(np.arange(0)),
                             index=pd.Index([], dtype="int64", name=index_name))
    elif len(pieces) == 1:
        frame = pieces[0]
    else:
        frame = _concat(pieces)
    frame = _ordered(frame, label_names, clashing)
    frame.index.name = index_name
    return _apply_schema(frame, schema) if schema else frame


_SCALAR_KINDS = frozenset({"integer", "floating", "mixed-integer-float", "boolean", "string",
                           "bytes", "complex", "decimal", "datetime64", "datetime", "date",
                           "timedelta64", "timedelta", "time", "empty"})
"""What `pd.api.types.infer_dtype` (C speed) says of an array of scalars only."""


def _all_scalars(values: np.ndarray, skipna: bool) -> bool:
    """Whether every value (None aside with `skipna`) is a plain scalar: no dict, Series or
    DataFrame to spread into columns, each item its own label. Saves a Python pass a task."""
    return pd.api.types.infer_dtype(values, skipna=skipna) in _SCALAR_KINDS


def _label_columns(items: np.ndarray, labels: Labels) -> dict[str, list]:
    """{name: one value per task}, in first-seen order: each item's scalar labels, None where
    an item has no such label. One dict at a time, none kept per item."""
    if isinstance(labels, ItemNamed) and len(items) and _all_scalars(items, skipna=False):
        return {labels.name: items.tolist()}
    columns: dict[str, list] = {}
    for task, item in enumerate(items.tolist()):
        for name, value in labels(item).items():
            if pd.api.types.is_scalar(value):
                if name not in columns:
                    columns[name] = [None] * len(items)
                columns[name][task] = value
    return columns


def _columns(values: list, ok: np.ndarray, scalars: bool) -> dict:
    """{column: array} of consecutive results that are no DataFrame: a dict or Series gives
    its keys, anything else the `result` column; failed items leave gaps. Columns in
    first-seen order, typed as the values are. `scalars`: the values are known to be plain
    scalars (no dict or Series among them)."""
    ok_list = ok.tolist()
    rows = {} if scalars else {
        i: value if isinstance(value, dict) else value.to_dict()
        for i, (value, good) in enumerate(zip(values, ok_list))
        if good and isinstance(value, (dict, pd.Series))}
    if not rows:  # plain values only (the common case): one column, no dict per row
        if not ok.any():
            return {}
        if ok.all():
            return {"result": _typed(values, gaps=False)}
        return {"result": _typed([value if good else None
                                  for value, good in zip(values, ok_list)], gaps=True)}
    plain = [good and i not in rows for i, good in enumerate(ok_list)]
    first_plain = plain.index(True) if True in plain else None
    keys: dict[str, None] = {}
    for i, row in rows.items():
        if first_plain is not None and first_plain < i:
            keys.setdefault("result")
        keys.update(dict.fromkeys(row))
    if first_plain is not None:
        keys.setdefault("result")
    columns = {}
    for key in keys:
        column = [rows[i].get(key) if i in rows else values[i] if plain[i] and key == "result"
                  else None for i in range(len(values))]
        gaps = any(key not in rows[i] if i in rows else not (plain[i] and key == "result")
                   for i in range(len(values)))
        columns[key] = _typed(column, gaps)
    return columns


def _typed(values: Sequence[Any], gaps: bool) -> Any:
    """Integers stay integers (nullable `Int64` with gaps), bools bools, floats float64."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    has_missing = gaps or (pd.api.types.infer_dtype(values, skipna=False) != kind
                           and any(v is None or v is pd.NA for v in values))
    if kind == "integer":
        return pd.array(values, dtype="Int64") if has_missing else np.array(values)
    if kind == "boolean":
        return pd.array(values, dtype="boolean") if has_missing else np.array(values, bool)
    if kind in ("floating", "mixed-integer-float"):
        return np.array([math.nan if v is None or v is pd.NA else v for v in values],
                        dtype=float)
    return values


class _Metadata:
    """The metadata columns of a whole table, made once; `of(tasks)` picks their rows, named
    with `pp_` where a result uses the name."""

    def __init__(self, table: TaskTable, clashing: set[str]) -> None:
        self.clashing = clashing
        self.status = STATUS_NAMES[table.status]
        self.engine = table.engine.astype("int64")
        # Strings as codes into their few distinct values: a string column of a million
        # rows is then a take, not a million checks.
        self.host_names = pd.array([*table.hosts, None], dtype="string")
        self.host = table.host  # NONE (-1) takes the last name: None
        self.duration_s = table.duration_s
        self.attempts = table.attempts.astype("int64")
        texts = [error_text(*error) for error in table.errors.values()]
        self.error_texts = pd.array([None, *texts], dtype="string")
        self.error = np.zeros(len(table), dtype=np.int64)
        self.error[list(table.errors)] = np.arange(1, len(texts) + 1)

    def of(self, tasks: np.ndarray) -> dict:
        engine = self.engine[tasks]
        columns = {
            "status": self.status[tasks],
            "engine": pd.arrays.IntegerArray(engine, engine == NONE),
            "host": self.host_names.take(self.host[tasks]),
            "duration_s": self.duration_s[tasks],
            "attempts": self.attempts[tasks],
            "error": self.error_texts.take(self.error[tasks]),
        }
        return {(f"pp_{name}" if name in self.clashing else name): values
                for name, values in columns.items()}


def _piece(values: dict | pd.DataFrame, owners: np.ndarray, ok: np.ndarray,
           labelled: dict[str, list], metadata: _Metadata) -> pd.DataFrame:
    """Labels, values and metadata of consecutive tasks (or of one DataFrame result's rows):
    `owners` is each row's task, `ok` whether it succeeded. Built in one go, labels first and
    metadata last: a column set at a time costs pandas a copy of its blocks."""
    index = pd.Index(owners, dtype="int64")
    labels = {}
    first, rows = (int(owners[0]) if len(owners) else 0), len(owners)
    for name, column in labelled.items():  # a DataFrame's rows share one task; others follow
        label = [column[first]] * rows if isinstance(values, pd.DataFrame) else \
            column[first:first + rows]
        if name in values:  # the result's own value stands where the item succeeded
            label = [own if succeeded else one for own, succeeded, one
                     in zip(list(values[name]), ok, label)]
        labels[name] = _typed(label, gaps=False)
    if isinstance(values, pd.DataFrame):
        own = values.set_axis(index).drop(columns=[n for n in labels if n in values.columns])
        return pd.concat([pd.DataFrame(labels, index=index), own,
                          pd.DataFrame(metadata.of(owners), index=index)], axis=1)
    rest = {name: column for name, column in values.items() if name not in labels}
    return pd.DataFrame({**labels, **rest, **metadata.of(owners)}, index=index)


def _concat(pieces: list[pd.DataFrame]) -> pd.DataFrame:
    """Pieces one after another; integer and bool columns with gaps become nullable."""
    kinds: dict[str, set[str]] = {}
    for piece in pieces:
        for name, dtype in piece.dtypes.items():
            kinds.setdefault(name, set()).add(dtype.kind)
    frame = pd.concat(pieces)
    for name, seen in kinds.items():
        if seen <= {"i", "u"} and frame[name].dtype.kind not in "iu":
            frame[name] = frame[name].astype("Int64")
        elif seen == {"b"} and frame[name].dtype.kind != "b":
            frame[name] = frame[name].astype("boolean")
    return frame


def _ordered(frame: pd.DataFrame, label_names: list[str], clashing: set[str]) -> pd.DataFrame:
    """Labels first, then the result's columns, then the metadata."""
    metadata = [f"pp_{n}" if n in clashing else n for n in METADATA_COLUMNS]
    rest = [c for c in frame.columns if c not in label_names and c not in metadata]
    order = [*label_names, *rest, *metadata]
    return frame if list(frame.columns) == order else frame[order]


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


def errors_frame(records: TaskTable | Iterable[TaskRecord]) -> pd.DataFrame:
    """One row per failed item (not the cancelled ones), indexed by `task` like the merged
    frame: which item, what failed, where, and the full traceback."""
    table = table_of(records)
    failed = [TaskRecord(**table.fields(task)) for task in np.flatnonzero(table.failed()).tolist()]
    columns = {name: list(map(attrgetter(name), failed))
               for name in ("item", "status", "error_type", "error", "engine", "attempts",
                            "traceback", "output")}
    columns["engine"] = pd.array(columns["engine"], dtype="Int64")
    index = pd.Index([r.task for r in failed], dtype="int64", name=INDEX)
    return pd.DataFrame(columns, index=index)
