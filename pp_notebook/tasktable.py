"""A run's bookkeeping in columns: one numpy array per field, sparse dicts for the rare ones.

A TaskRecord object per item cost about 400 bytes of client memory: 4 GB for 10 million tasks
before their results and the merged DataFrame. Here a task is a position: its status is a
small-int code (STATUSES), its engine, pid, attempts, start and duration sit in typed arrays
(-1 or NaN where unknown), its host is a code into a short list of host names, its item and
value are slots in object arrays (a range's items are an int64 array). Errors, tracebacks
and printed output live in dicts keyed by task, because most tasks have none. That is 48
bytes a task (52 with its place in the queue) beside the items' and the results' own
objects.

TaskQueue is the run's queue of pending tasks in the same spirit: the tasks not sent yet as
one array and a cursor, and small deques for the few that come back (requeued in front,
retried at the back).

It imports the statuses from snapshot.py and nothing else of the package.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, get_args

import numpy as np

from .snapshot import FAILED, Status

STATUSES: tuple[Status, ...] = get_args(Status)
"""Status codes are positions in this tuple; `pending` is 0, so a new table is all pending."""
CODES: dict[Status, int] = {status: code for code, status in enumerate(STATUSES)}
PENDING, OK, CANCELLED = CODES["pending"], CODES["ok"], CODES["cancelled"]
FAILED_CODES = np.array([CODES[status] for status in FAILED], dtype=np.int8)
STATUS_NAMES = np.array(STATUSES, dtype=object)
"""Codes to names, for a whole column at once: `STATUS_NAMES[table.status]`."""
NONE = -1
"""An engine, pid or host code not known (never ran there, or not yet)."""


class TaskTable:
    """Everything known about each item of a run, by task (the item's position)."""

    def __init__(self, items: Sequence[Any]) -> None:
        n = len(items)
        self.items = _column(items, n)
        self.status = np.zeros(n, dtype=np.int8)
        self.engine = np.full(n, NONE, dtype=np.int32)
        self.pid = np.full(n, NONE, dtype=np.int32)
        self.host = np.full(n, NONE, dtype=np.int16)
        self.hosts: list[str] = []  # host codes index this list
        self._host_codes: dict[str, int] = {}
        self.started = np.full(n, math.nan)  # the client's clock (epoch seconds)
        self.duration_s = np.full(n, math.nan)  # measured on the engine
        self.attempts = np.zeros(n, dtype=np.int32)
        self.resumed = np.zeros(n, dtype=bool)  # taken from a checkpoint, not run again
        self.values = np.empty(n, dtype=object)  # None until a task succeeds
        self.errors: dict[int, tuple[str | None, str | None]] = {}  # (type, message)
        self.tracebacks: dict[int, str] = {}
        self.outputs: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.items)

    # -- reading ---------------------------------------------------------------------------

    def item(self, task: int) -> Any:
        """The item of `task` as the user gave it (a range's int, not a numpy int)."""
        return self.items[task:task + 1].tolist()[0]

    def status_of(self, task: int) -> Status:
        return STATUSES[self.status[task]]

    def is_pending(self, task: int) -> bool:
        return self.status[task] == PENDING

    def error_of(self, task: int) -> tuple[str | None, str | None]:
        """(error type, message) of the task's last failure, (None, None) if none."""
        return self.errors.get(task, (None, None))

    def failed(self) -> np.ndarray:
        """A mask of the tasks that ran and did not succeed (cancelled ones did not fail)."""
        return np.isin(self.status, FAILED_CODES)

    def host_names(self) -> np.ndarray:
        """Every task's host name (None where unknown), as an object array."""
        return np.array([*self.hosts, None], dtype=object)[self.host]  # NONE (-1) is the last

    def fields(self, task: int) -> dict[str, Any]:
        """One task's fields by TaskRecord's names, as plain Python values (None if unknown)."""
        task = range(len(self))[task]  # negative positions count from the end, as lists do
        error_type, error = self.error_of(task)
        return {"task": task, "item": self.item(task), "status": self.status_of(task),
                "value": self.values[task], "error_type": error_type, "error": error,
                "traceback": self.tracebacks.get(task), "output": self.outputs.get(task, ""),
                "engine": _known(self.engine[task]),
                "host": self.hosts[self.host[task]] if self.host[task] != NONE else None,
                "pid": _known(self.pid[task]),
                "started": _finite(self.started[task]),
                "duration_s": _finite(self.duration_s[task]),
                "attempts": int(self.attempts[task]), "resumed": bool(self.resumed[task])}

    # -- writing ---------------------------------------------------------------------------

    def host_code(self, host: str | None) -> int:
        """The code of `host`, added to the list on first sight."""
        if host is None:
            return NONE
        code = self._host_codes.get(host)
        if code is None:
            code = self._host_codes[host] = len(self.hosts)
            self.hosts.append(host)
        return code

    def set_status(self, task: int, status: Status) -> None:
        self.status[task] = CODES[status]

    def set_error(self, task: int, error_type: str | None, error: str | None,
                  traceback: str | None) -> None:
        """The task's failure (all None: it has none)."""
        known = error_type is not None or error is not None
        _put(self.errors, task, (error_type, error) if known else None)
        _put(self.tracebacks, task, traceback)

    def set_attempts(self, tasks: np.ndarray, engine: int, host: int, pid: int | None,
                     started: np.ndarray, duration_s: np.ndarray, outputs: Sequence[str]) -> None:
        """Finished attempts of `tasks` (no task twice), each counted; `host` is a code from
        host_code(), `outputs` what each printed."""
        self.attempts[tasks] += 1
        self.engine[tasks], self.host[tasks] = engine, host
        self.pid[tasks] = NONE if pid is None else pid
        self.started[tasks], self.duration_s[tasks] = started, duration_s
        if self.outputs or any(outputs):  # most tasks print nothing
            for task, output in zip(tasks.tolist(), outputs):
                _put(self.outputs, task, output or None)

    def set_ok(self, tasks: np.ndarray, values: Sequence[Any]) -> None:
        """`tasks` succeeded with `values`: no error of an earlier attempt stays."""
        self.status[tasks] = OK
        self.values[tasks] = _objects(values, len(tasks))
        if self.errors or self.tracebacks:
            for task in tasks.tolist():
                self.set_error(task, None, None, None)

    def update(self, task: int, **fields: Any) -> None:
        """Set fields by TaskRecord's names (None where unknown): for a checkpoint's rows and
        for tables made from records, not for the scheduling's hot path."""
        for name, value in fields.items():
            if name in ("engine", "pid"):
                getattr(self, name)[task] = NONE if value is None else value
            elif name in ("started", "duration_s"):
                getattr(self, name)[task] = math.nan if value is None else value
            elif name in ("attempts", "resumed"):
                getattr(self, name)[task] = value
            elif name == "host":
                self.host[task] = self.host_code(value)
            elif name == "status":
                self.set_status(task, value)
            elif name == "value":
                self.values[task] = value
            elif name in ("error_type", "error"):
                error_type, error = self.error_of(task)
                self.set_error(task, value if name == "error_type" else error_type,
                               value if name == "error" else error, self.tracebacks.get(task))
            elif name == "traceback":
                _put(self.tracebacks, task, value)
            elif name == "output":
                _put(self.outputs, task, value or None)
            else:
                raise TypeError(f"a task has no field {name!r}")


class TaskQueue:
    """Pending tasks in the order they go out: requeued ones first, then the tasks never sent
    (one array and a cursor: no Python int per task), then retried ones."""

    def __init__(self, tasks: np.ndarray) -> None:
        small = not len(tasks) or tasks.max() <= np.iinfo(np.int32).max
        self._fresh = tasks.astype(np.int32 if small else np.int64)  # 4 bytes a task, mostly
        self._cursor = 0
        self._front: deque[int] = deque()
        self._back: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._front) + len(self._fresh) - self._cursor + len(self._back)

    def __iter__(self) -> Iterator[int]:
        yield from list(self._front)
        yield from self._fresh[self._cursor:].tolist()
        yield from list(self._back)

    def peek(self) -> int:
        """The next task (IndexError when empty)."""
        if self._front:
            return self._front[0]
        if self._cursor < len(self._fresh):
            return int(self._fresh[self._cursor])
        return self._back[0]

    def popleft(self) -> int:
        """Take the next task (IndexError when empty)."""
        if self._front:
            return self._front.popleft()
        if self._cursor < len(self._fresh):
            self._cursor += 1
            return int(self._fresh[self._cursor - 1])
        return self._back.popleft()

    def take(self, size: int, alone: Collection[int] = ()) -> list[int]:
        """Up to `size` tasks from the front. A task in `alone` goes by itself: alone when it
        comes first, otherwise the batch ends before it."""
        taken = [self.popleft()]
        if taken[0] in alone:
            return taken
        while len(taken) < size and self and self.peek() not in alone:
            if self._front or self._cursor >= len(self._fresh):
                taken.append(self.popleft())
            else:
                taken += self._take_fresh(size - len(taken), alone)
        return taken

    def _take_fresh(self, most: int, alone: Collection[int]) -> list[int]:
        """Up to `most` never-sent tasks in one slice, stopping before one in `alone`."""
        chunk = self._fresh[self._cursor:self._cursor + most]
        if alone:
            stops = np.flatnonzero(np.isin(chunk, np.fromiter(alone, np.int64, len(alone))))
            chunk = chunk[:stops[0]] if len(stops) else chunk
        self._cursor += len(chunk)
        return chunk.tolist()

    def push_front(self, tasks: Iterable[int]) -> None:
        """Put `tasks` back at the front, in their order: they go out next."""
        self._front.extendleft(reversed(list(tasks)))

    def push_back(self, tasks: Iterable[int]) -> None:
        """Put `tasks` at the end, in their order."""
        self._back.extend(tasks)

    def clear(self) -> None:
        self._front.clear()
        self._back.clear()
        self._cursor = len(self._fresh)


def _column(items: Sequence[Any], n: int) -> np.ndarray:
    """A run's items: a range as int64 (8 bytes a task, not 36 with its int objects; each
    comes back a Python int), anything else as objects."""
    if isinstance(items, range) and n and max(abs(items[0]), abs(items[-1])) < 2 ** 63:
        return np.arange(items.start, items.stop, items.step, dtype=np.int64)
    return _objects(items, n)


def _objects(values: Iterable[Any], n: int) -> np.ndarray:
    """`values` in an object array, each as it is (a tuple stays one element).

    Object arrays, not lists, hold a run's items and values: the garbage collector does not
    walk them. Python's full collections, a few a second while results come in, walked 20
    million references at 10 million tasks (0.2 s each; 9 s of a 26 s run at 4 million)."""
    return np.fromiter(values, dtype=object, count=n)


def _put(sparse: dict[int, Any], task: int, value: Any) -> None:
    """Keep `value` for `task`, or nothing where it is None: sparse columns hold only values."""
    if value is None:
        sparse.pop(task, None)
    else:
        sparse[task] = value


def _known(code: Any) -> int | None:
    return None if code == NONE else int(code)


def _finite(value: Any) -> float | None:
    return None if math.isnan(value) else float(value)
