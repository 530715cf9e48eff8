"""TaskRecords, and what is built from them: the merged DataFrame and the failures.

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
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np
import pandas as pd

from .snapshot import FAILED, Status

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


def item_label(item: Any) -> dict:
    """`map`'s label: a scalar item is its own `item` column."""
    return {"item": item} if pd.api.types.is_scalar(item) else {}


def merged_frame(records: list[TaskRecord], schema: dict | None = None,
                 labels: Labels | None = None) -> pd.DataFrame:
    """One DataFrame of every record's labels, result and metadata, in input order."""
    marks = [_scalars(labels(r.item)) if labels is not None else {} for r in records]
    parts: list[tuple[dict | pd.DataFrame, list[TaskRecord], list[dict]]] = []
    rows: list[dict] = []
    owners: list[TaskRecord] = []
    owner_marks: list[dict] = []

    def flush_rows() -> None:
        if owners:
            parts.append((_dict_columns(rows), owners[:], owner_marks[:]))
            rows.clear()
            owners.clear()
            owner_marks.clear()

    for record, mark in zip(records, marks):
        value = record.value if record.status == "ok" else None
        if isinstance(value, pd.DataFrame):
            flush_rows()
            parts.append((value.reset_index(drop=True), [record] * len(value), [mark]))
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
        owner_marks.append(mark)
    flush_rows()
    label_names = list(dict.fromkeys(name for mark in marks for name in mark))
    used = set(label_names) | {key for values, _, _ in parts for key in values}
    clashing = (set(METADATA_COLUMNS) | {INDEX}) & used
    pieces = [_piece(values, owners, part_marks, label_names, clashing)
              for values, owners, part_marks in parts]
    index_name = f"pp_{INDEX}" if INDEX in clashing else INDEX
    if not pieces:
        empty = _metadata([], clashing)
        frame = pd.DataFrame(empty, index=pd.Index([], dtype="int64", name=index_name))
    elif len(pieces) == 1:
        frame = pieces[0]
    else:
        frame = _concat(pieces)
    frame = _ordered(frame, label_names, clashing)
    frame.index.name = index_name
    return _apply_schema(frame, schema) if schema else frame


def _scalars(mark: dict) -> dict:
    return {name: value for name, value in mark.items() if pd.api.types.is_scalar(value)}


def _dict_columns(rows: list[dict]) -> dict:
    """{column: array} from dict rows, in first-seen key order, typed as the values are."""
    keys = dict.fromkeys(key for row in rows for key in row)
    return {key: _typed([row.get(key) for row in rows], any(key not in row for row in rows))
            for key in keys}


def _typed(values: list, gaps: bool) -> Any:
    """Integers stay integers (nullable `Int64` with gaps), bools bools, floats float64."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    has_missing = gaps or any(v is None or v is pd.NA for v in values)
    if kind == "integer":
        return pd.array(values, dtype="Int64") if has_missing else np.array(values)
    if kind == "boolean":
        return pd.array(values, dtype="boolean") if has_missing else np.array(values, bool)
    if kind in ("floating", "mixed-integer-float"):
        return np.array([math.nan if v is None or v is pd.NA else v for v in values],
                        dtype=float)
    return values


def _metadata(owners: list[TaskRecord], clashing: set[str]) -> dict:
    """The metadata columns of `owners`, `pp_`-prefixed where a result uses the name."""
    columns = {
        "status": list(map(attrgetter("status"), owners)),
        "engine": pd.array(list(map(attrgetter("engine"), owners)), dtype="Int64"),
        "host": pd.array(list(map(attrgetter("host"), owners)), dtype="string"),
        "duration_s": np.array([math.nan if r.duration_s is None else r.duration_s
                                for r in owners], dtype=float),
        "attempts": np.array(list(map(attrgetter("attempts"), owners)), dtype="int64"),
        "error": pd.array(list(map(attrgetter("message"), owners)), dtype="string"),
    }
    return {(f"pp_{name}" if name in clashing else name): values
            for name, values in columns.items()}


def _piece(values: dict | pd.DataFrame, owners: list[TaskRecord], marks: list[dict],
           label_names: list[str], clashing: set[str]) -> pd.DataFrame:
    """Labels, values and metadata of consecutive records (or of one DataFrame result)."""
    index = pd.Index([r.task for r in owners], dtype="int64")
    frame = values if isinstance(values, pd.DataFrame) else pd.DataFrame(values, index=index)
    frame = frame.set_axis(index) if isinstance(values, pd.DataFrame) else frame
    ok = np.array([r.status == "ok" for r in owners], dtype=bool)
    rows = len(owners)
    for name in label_names:
        labelled = [(marks[0] if len(marks) == 1 else marks[i]).get(name) for i in range(rows)]
        if name in frame.columns:  # the result's own value stands where the item succeeded
            labelled = [own if succeeded else label for own, succeeded, label
                        in zip(frame[name].tolist(), ok, labelled)]
        frame[name] = _typed(labelled, gaps=False)
    for name, column in _metadata(owners, clashing).items():
        frame[name] = column
    return frame


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
    return frame[[*label_names, *rest, *metadata]]


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
    """One row per failed item (not the cancelled ones), indexed by `task` like the merged
    frame: which item, what failed, where, and the full traceback."""
    failed = [r for r in records if r.failed]
    columns = {name: list(map(attrgetter(name), failed))
               for name in ("item", "status", "error_type", "error", "engine", "attempts",
                            "traceback", "output")}
    columns["engine"] = pd.array(columns["engine"], dtype="Int64")
    index = pd.Index([r.task for r in failed], dtype="int64", name=INDEX)
    return pd.DataFrame(columns, index=index)

