"""Code that runs ON the engines: a batch of items, run one by one, one Outcome per item.

This is the only module imported on engines, so it stays small and imports nothing that
only the client has (no pandas, widgets or matplotlib at import time). `run_batch` never
raises: every failure of an item travels back as data, so one item cannot disturb another.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any, Callable, NamedTuple

import cloudpickle

OUTPUT_LIMIT = 100_000
"""Characters of printed output kept per task; the rest is counted, not stored."""

RETIMEOUT_INTERVAL = 0.5
"""After a timeout fires, raise again this often until the task gives up (it may catch it)."""


class Outcome(NamedTuple):
    """What happened to one item on an engine. `started` is the engine's wall clock."""

    index: int
    status: str  # ok | error | timeout | invalid | cancelled
    value: Any
    error_type: str | None
    error: str | None
    traceback: str | None
    output: str
    started: float
    duration: float


class TaskTimeout(BaseException):
    """Raised inside a task whose run time exceeded its limit.

    A BaseException, so that a task's own `except Exception` does not swallow it.
    """


_payloads: OrderedDict[str, tuple[Callable, Any]] = OrderedDict()
_PAYLOADS_KEPT = 4
_armed = False  # the alarm raises only while a task runs, never in this module's own code
_limit = 0.0


def engine_info() -> dict:
    """Facts about this engine, asked once when it joins."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "python": sys.version.split()[0]}


def forget(run_key: str) -> None:
    """Drop a finished run's function from this engine."""
    _payloads.pop(run_key, None)


def run_batch(run_key: str, payload: bytes | None, items: bytes, timeout: float | None,
              budget: float) -> bytes:
    """Run each (index, item-bytes) pair of a batch, return pickled Outcomes.

    `payload` (the pickled function and validator) comes with an engine's first batch of a
    run and is kept for the next ones. New items are not started once `budget` seconds have
    passed: the client requeues what was not run, so no batch holds an engine for long.
    """
    pairs = pickle.loads(items)
    batch_start = time.perf_counter()
    try:
        fn, validate = _load_payload(run_key, payload)
    except BaseException as exc:  # the task function itself cannot be loaded here
        failed = _failure(0, "error", exc, time.time(), 0.0, "")
        return _dump([failed._replace(index=index) for index, _ in pairs])

    outcomes = []
    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGALRM, _on_alarm) if main_thread else None
    try:
        for position, (index, item_bytes) in enumerate(pairs):
            if position and time.perf_counter() - batch_start > budget:
                break
            outcome = _run_item(fn, validate, index, item_bytes, timeout if main_thread else None)
            outcomes.append(outcome)
            if outcome.status == "cancelled":
                break
    finally:
        if main_thread:
            signal.signal(signal.SIGALRM, old_handler)
    return _dump(outcomes)


def _load_payload(run_key: str, payload: bytes | None) -> tuple[Callable, Any]:
    if payload is not None:
        _payloads[run_key] = pickle.loads(payload)
        while len(_payloads) > _PAYLOADS_KEPT:
            _payloads.popitem(last=False)
    return _payloads[run_key]


def _run_item(fn: Callable, validate: Any, index: int, item_bytes: bytes,
              timeout: float | None) -> Outcome:
    output = _CappedOutput()
    started = time.time()
    t0 = time.perf_counter()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = output
    try:
        try:
            item = pickle.loads(item_bytes)
            _arm(timeout)
            try:
                value = fn(item)
            finally:
                _disarm()
        finally:
            sys.stdout, sys.stderr = saved
    except TaskTimeout as exc:
        return _failure(index, "timeout", exc, started, time.perf_counter() - t0, output.text())
    except KeyboardInterrupt as exc:
        # The client interrupts a task that overran its limit, or a cancelled run.
        duration = time.perf_counter() - t0
        overran = timeout is not None and duration >= timeout
        return _failure(index, "timeout" if overran else "cancelled", exc, started, duration,
                        output.text())
    except BaseException as exc:
        return _failure(index, "error", exc, started, time.perf_counter() - t0, output.text())
    duration = time.perf_counter() - t0
    reason = check_result(validate, value) if validate is not None else None
    if reason is not None:
        return Outcome(index, "invalid", value, "InvalidResult", reason, None, output.text(),
                       started, duration)
    return Outcome(index, "ok", value, None, None, None, output.text(), started, duration)


def _failure(index: int, status: str, exc: BaseException, started: float, duration: float,
             output: str) -> Outcome:
    # Drop this module's own frame: the traceback starts in the user's code.
    tb_obj = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    tb = "".join(traceback.format_exception(type(exc), exc, tb_obj))
    return Outcome(index, status, None, type(exc).__name__, str(exc), tb, output, started,
                   duration)


def _on_alarm(signum, frame):
    if _armed:
        raise TaskTimeout(f"task exceeded its time limit of {_limit:g} s")



def _arm(timeout: float | None) -> None:
    global _armed, _limit
    if timeout is not None:
        _limit = timeout
        _armed = True
        signal.setitimer(signal.ITIMER_REAL, timeout, RETIMEOUT_INTERVAL)


def _disarm() -> None:
    global _armed
    if _armed:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def check_result(validate: Any, value: Any) -> str | None:
    """Return why `value` is invalid, or None. `validate` is a callable or {column: dtype}."""
    if isinstance(validate, dict):
        return _check_schema(validate, value)
    try:
        verdict = validate(value)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if verdict is None or verdict is True:
        return None
    if verdict is False:
        return f"{getattr(validate, '__name__', 'validator')} returned False"
    return str(verdict)


def _check_schema(schema: dict, value: Any) -> str | None:
    columns = getattr(value, "columns", None)
    if columns is not None:  # a DataFrame: cast each declared column
        missing = [name for name in schema if name not in columns]
        if missing:
            return f"missing column(s) {missing}"
        for name, dtype in schema.items():
            try:
                value[name].astype(dtype)
            except (TypeError, ValueError) as exc:
                return f"column {name!r} is not {dtype}: {exc}"
        return None
    if not hasattr(value, "keys") or not hasattr(value, "__getitem__"):
        return f"expected a dict-like result with {list(schema)}, got {type(value).__name__}"
    missing = [name for name in schema if name not in value.keys()]
    if missing:
        return f"missing key(s) {missing}"
    for name, dtype in schema.items():
        reason = _check_scalar(value[name], dtype)
        if reason:
            return f"{name!r}: {reason}"
    return None


def _check_scalar(value: Any, dtype: Any) -> str | None:
    import numpy as np  # only when a schema is used

    try:
        kind = np.dtype(dtype).kind
    except TypeError:  # a pandas extension dtype ("string", "Int64", ...): cast on the client
        return None
    if kind in "iu" and not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
        return f"{value!r} is not an integer"
    if kind == "f" and not (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)):
        return f"{value!r} is not a number"
    if kind == "b" and not isinstance(value, (bool, np.bool_)):
        return f"{value!r} is not a bool"
    if kind == "U" and not isinstance(value, str):
        return f"{value!r} is not a str"
    return None


def _dump(outcomes: list[Outcome]) -> bytes:
    """Pickle the outcomes; a value that cannot be pickled becomes that item's error.

    Plain pickle first (twice as fast); cloudpickle for what only it can pickle, such as a
    function or an instance of a class that was shipped by value.
    """
    for dumps in (pickle.dumps, cloudpickle.dumps):
        try:
            return dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            pass
    safe = []
    for outcome in outcomes:
        try:
            cloudpickle.dumps(outcome.value, protocol=pickle.HIGHEST_PROTOCOL)
            safe.append(outcome)
        except Exception as exc:
            safe.append(outcome._replace(
                status="error", value=None, error_type=type(exc).__name__,
                error=f"the task's result ({type(outcome.value).__name__}) cannot be sent back: "
                      f"{exc}. Return plain data (numbers, str, dict, list, DataFrame).",
                traceback=None))
    return cloudpickle.dumps(safe, protocol=pickle.HIGHEST_PROTOCOL)


class _CappedOutput:
    """A stdout/stderr stand-in that keeps the first OUTPUT_LIMIT characters of a task."""

    encoding = "utf-8"

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._kept = 0
        self._dropped = 0

    def write(self, text: str) -> int:
        room = OUTPUT_LIMIT - self._kept
        if room > 0:
            self._parts.append(text[:room])
            self._kept += min(room, len(text))
        self._dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def text(self) -> str:
        if not self._parts:
            return ""
        text = "".join(self._parts)
        if self._dropped:
            text += f"\n[… {self._dropped} more characters of output cut]"
        return text
