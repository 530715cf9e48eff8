"""Code that runs ON the engines: a batch of items, run one by one, one Outcome per item.

This is the only module imported on engines, so it stays small and imports nothing that
only the client has (no pandas, widgets or matplotlib at import time). `run_batch` never
raises: every failure of an item travels back as data, so one item cannot disturb another.
"""

from __future__ import annotations

import atexit
import ctypes
import io
import mmap
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, NamedTuple

import cloudpickle

if TYPE_CHECKING:  # engines import nothing else of the package
    from .snapshot import Status

OUTPUT_LIMIT = 100_000
"""Characters of printed output kept per task; the rest is counted, not stored."""

RETIMEOUT_INTERVAL = 0.5
"""After a timeout fires, raise again this often until the task gives up (it may catch it)."""


class Outcome(NamedTuple):
    """What happened to one item on an engine. `started` is the engine's wall clock.
    A batch's outcomes travel as columns, a tuple per field in this order. `task` is
    the item's index (a field named `index` would hide tuple.index)."""

    task: int
    status: Status  # ok | error | timeout | memory | invalid | cancelled
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


SHM_DIR = "/dev/shm"
"""Where shared values live on each host: files in memory, mapped read-only by its engines."""
_SEGMENT_MAGIC = b"ppnbseg1"
_ALIGN = 64

_segment_prefix = "pp_notebook"
_shared: dict[str, Any] = {}
"""Shared values this engine has loaded, by segment name: unpickled once per engine."""
_written: set[str] = set()
"""Segment files this engine wrote and removes when it exits (hosts other than the client's)."""

_payloads: OrderedDict[str, tuple[Callable, Any, list] | BaseException] = OrderedDict()
_PAYLOADS_KEPT = 4
_armed = False  # the alarm raises only while a task runs, never in this module's own code
_limit = 0.0
OVERDUE_KEY = "pp_notebook_overdue"
"""The key under which an engine publishes (ipyparallel's data_message, the batch's
AsyncResult `.data` on the client) the items whose threads run past their limit."""


class _Limit:
    """A worker thread's task under a limit: when to raise TaskTimeout in it next, which item
    it runs, and whether it has run past its limit already."""

    __slots__ = ("deadline", "task", "overdue")

    def __init__(self, deadline: float, task: int) -> None:
        self.deadline = deadline
        self.task = task
        self.overdue = False


_deadlines: dict[int, _Limit] = {}
"""Worker threads (concurrency > 1) running a task under a limit, by thread ident. The
batch's main thread raises TaskTimeout in those past their deadline."""
_deadlines_lock = threading.Lock()


def engine_info(segment_prefix: str = "pp_notebook") -> dict:
    """Facts about this engine, asked once when it joins (its scheduler job, if Slurm started
    it); it learns the prefix of its cluster's shared-value files (one cluster's files are
    never another's)."""
    global _segment_prefix
    _segment_prefix = segment_prefix
    for stream in (sys.stdout, sys.stderr):
        _flush_only_when_written(stream)
    return {"host": socket.gethostname(), "pid": os.getpid(), "python": sys.version.split()[0],
            "job": os.environ.get("SLURM_JOB_ID")}


def _flush_only_when_written(stream: Any) -> None:
    """ipyparallel flushes stdout and stderr after every request, and ipykernel's flush waits
    for its IO thread even when nothing was written: 0.7 ms of each batch's round trip. Make
    that flush return at once when the stream has nothing pending (tasks print into their
    own buffers, not here). A stream without ipykernel's pending flags is left alone."""
    flush = getattr(stream, "flush", None)
    if flush is None or not hasattr(stream, "_flush_pending") or hasattr(flush, "pp_lazy"):
        return

    def lazy_flush() -> None:
        if stream._flush_pending or getattr(stream, "_subprocess_flush_pending", True):
            flush()

    lazy_flush.pp_lazy = True  # type: ignore[attr-defined]
    stream.flush = lazy_flush


def leftovers() -> dict:
    """What runs have left on this engine: the task functions kept (by run key), threads under
    a time limit, the armed alarm, the interval timer, the address-space limit and the class
    of stdout. A clean engine keeps no function of a finished run and has nothing armed."""
    import resource

    return {"pid": os.getpid(), "runs": list(_payloads), "limited_threads": len(_deadlines),
            "armed": _armed, "itimer": signal.getitimer(signal.ITIMER_REAL),
            "rlimit_as": resource.getrlimit(resource.RLIMIT_AS), "shared": sorted(_shared),
            "stdout": type(sys.stdout).__name__}


def forget(run_keys: Iterable[str]) -> None:
    """Drop finished runs' functions from this engine."""
    for key in run_keys:
        _payloads.pop(key, None)


def run_batch(run_key: str, payload: bytes | None, items: bytes, timeout: float | None,
              budget: float, concurrency: int = 1, memory_limit: int | None = None,
              finished: Iterable[str] | None = None) -> bytes:
    """Run each item of a batch, return pickled Outcomes.

    `items` is a pickled (indices, entries, pickled) triple: with `pickled`, each entry is
    one item's own pickle, loaded inside its task (so an item that cannot be loaded here fails
    alone); without, the entries are the items (plain scalars, pickled whole by the client).

    `payload` (the pickled function and validator) comes with an engine's first batch of a
    run and is kept for the next ones. New items are not started once `budget` seconds have
    passed: the client requeues what was not run, so no batch holds an engine for long.
    `concurrency` > 1 runs that many items at once in threads (for tasks that wait on I/O).
    `memory_limit` caps how many bytes the engine may add while a task runs. `finished`:
    keys of finished runs whose functions this engine drops first (cluster/finished_runs.py).
    """
    forget(finished or ())
    indices, entries, pickled = pickle.loads(items)
    load = pickle.loads if pickled else _as_is
    pairs = list(zip(indices, entries))
    try:
        fn, validate, slots = _load_payload(run_key, payload)
    except BaseException as exc:  # the task function itself cannot be loaded here
        if isinstance(exc, ModuleNotFoundError):
            exc = ModuleNotFoundError(
                f"{exc} on the engine (pid {os.getpid()}), where the task function's module "
                "is needed: install it there, put its folder on the engines' PYTHONPATH, or "
                "ship it by value with cloudpickle.register_pickle_by_value(module)")
        failed = _failure(0, "error", exc, time.time(), 0.0, "")
        return _dump([failed._replace(task=index) for index, _ in pairs])
    if concurrency > 1:
        _refresh(slots)  # the batch's threads share one fresh wrapper of each shared value
        return _dump(_run_threaded(fn, validate, pairs, load, timeout, budget, concurrency,
                                   memory_limit))

    outcomes = []
    batch_start = time.perf_counter()
    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGALRM, _on_alarm) if main_thread else None
    try:
        for position, (index, entry) in enumerate(pairs):
            if position and time.perf_counter() - batch_start > budget:
                break
            if slots:
                _refresh(slots)  # each task gets its own wrapper: its changes stay its own
            # nullcontext when no limit: a generator-based context costs 1.5 µs an item
            with _NO_CAP if memory_limit is None else _memory_cap(memory_limit):
                outcome = _run_item(fn, validate, index, entry, load,
                                    timeout if main_thread else None, memory_limit)
            outcomes.append(outcome)
            if outcome.status == "cancelled":
                break
    finally:
        if main_thread:
            signal.signal(signal.SIGALRM, old_handler)
    return _dump(outcomes)


def _run_threaded(fn: Callable, validate: Any, pairs: list[tuple[int, Any]],
                  load: Callable[[Any], Any], timeout: float | None, budget: float,
                  concurrency: int, memory_limit: int | None) -> list[Outcome]:
    """Run up to `concurrency` items at once in threads; this thread enforces their limits.

    A timeout or a cancel (SIGINT from the client lands here) is raised inside the task's
    thread, at its next Python instruction: a task blocked in one long C call ends after it.
    """
    outcomes: list[Outcome] = []
    todo = iter(pairs)
    running: set = set()
    overdue: list[int] = []
    batch_start = time.perf_counter()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = _thread_output
    try:
        with _memory_cap(memory_limit), ThreadPoolExecutor(concurrency) as pool:
            try:
                while True:
                    while len(running) < concurrency and (
                            not outcomes and not running
                            or time.perf_counter() - batch_start <= budget):
                        pair = next(todo, None)
                        if pair is None:
                            break
                        running.add(pool.submit(_run_item, fn, validate, *pair, load,
                                                timeout, memory_limit, False))
                    if not running:
                        break
                    finished, running = wait(running, RETIMEOUT_INTERVAL / 5, FIRST_COMPLETED)
                    outcomes += [f.result() for f in finished]
                    now_overdue = _raise_in_overdue_threads()
                    if now_overdue != overdue:
                        overdue = now_overdue
                        _publish({OVERDUE_KEY: overdue})
            except KeyboardInterrupt:  # a cancel: stop every running task, start no more
                with _deadlines_lock:
                    for ident in _deadlines:
                        _raise_in_thread(ident, KeyboardInterrupt)
                outcomes += [f.result() for f in wait(running)[0]]
    finally:
        sys.stdout, sys.stderr = saved
    return outcomes


def _raise_in_overdue_threads() -> list[int]:
    """Raise TaskTimeout in each thread past its deadline; returns the items of the threads
    still running past their limit."""
    now = time.perf_counter()
    with _deadlines_lock:
        for ident, limit in _deadlines.items():
            if now >= limit.deadline:
                limit.deadline = now + RETIMEOUT_INTERVAL
                limit.overdue = True
                _raise_in_thread(ident, TaskTimeout)
        return sorted(limit.task for limit in _deadlines.values() if limit.overdue)


def _publish(data: dict) -> None:
    """Send `data` to the client at once, while the batch still runs (it lands in the batch's
    AsyncResult `.data`): a thread blocked past its limit gets its engine killed before the
    batch can reply, and the client must know which item to blame. Only on an engine."""
    try:
        from ipyparallel.engine.app import IPEngine

        if IPEngine.initialized():
            from ipyparallel.datapub import publish_data

            publish_data(data)
    except Exception:  # the client falls back to running the batch's items alone
        pass


def _raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))


_NO_CAP = nullcontext()


@contextmanager
def _memory_cap(limit: int | None) -> Iterator[None]:
    """Let this process map at most `limit` more bytes: beyond, allocations raise MemoryError."""
    if limit is None or not os.path.exists("/proc/self/statm"):  # Linux only
        yield
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = mapped + limit if hard == resource.RLIM_INFINITY else min(hard, mapped + limit)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _load_payload(run_key: str, payload: bytes | None) -> tuple[Callable, Any, list]:
    """The run's function, validator and the places its shared values sit in; a payload that
    failed to load fails every batch of the run the same way."""
    if payload is not None:
        try:
            unpickler = _SharedUnpickler(io.BytesIO(payload))
            fn, validate = unpickler.load()
            _payloads[run_key] = (fn, validate, _slots(fn, unpickler.loaded))
        except BaseException as exc:
            _payloads[run_key] = exc
        while len(_payloads) > _PAYLOADS_KEPT:
            _payloads.popitem(last=False)
    loaded = _payloads[run_key]
    if isinstance(loaded, BaseException):
        raise loaded
    return loaded


# -- shared values: one file per host in /dev/shm, mapped read-only by its engines -------------

def write_segment(segment: str, inband: bytes, buffers: list, remove_at_exit: bool) -> int:
    """Write a shared value's pickle (protocol 5: in-band bytes and out-of-band buffers) into
    `/dev/shm/<segment>` for every engine of this host; returns its size. The file appears
    whole (written aside, then renamed). `remove_at_exit`: this engine removes it when it
    stops (on hosts other than the client's, whose files the client removes)."""
    path = os.path.join(SHM_DIR, segment)
    parts = [memoryview(inband), *(memoryview(b).cast("B") for b in buffers)]
    header = struct.pack(f"<8sI{len(parts)}Q", _SEGMENT_MAGIC, len(parts),
                         *(part.nbytes for part in parts))
    offset = _aligned(len(header))
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as out:
        out.write(header)
        for part in parts:
            out.seek(offset)
            out.write(part)
            offset = _aligned(offset + part.nbytes)
        out.truncate(offset)
    os.replace(temporary, path)
    if remove_at_exit:
        _written.add(path)
    return offset


def drop_segments(segments: list[str], unlink: bool) -> None:
    """Forget shared values on this engine; `unlink`: remove their files on this host too."""
    for segment in segments:
        _shared.pop(segment, None)
        path = os.path.join(SHM_DIR, segment)
        _written.discard(path)
        if unlink:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _load_segment(segment: str) -> Any:
    """A shared value from this host's file, unpickled once per engine: numeric arrays (and
    the numeric blocks of pandas frames) stay in the read-only mapping, zero-copy."""
    if segment not in _shared:
        with open(os.path.join(SHM_DIR, segment), "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        magic, count = struct.unpack_from("<8sI", view)
        if magic != _SEGMENT_MAGIC:
            raise ValueError(f"{segment} in {SHM_DIR} is not a pp_notebook shared value")
        sizes = struct.unpack_from(f"<{count}Q", view, 12)
        offset, parts = _aligned(12 + 8 * count), []
        for size in sizes:
            parts.append(view[offset:offset + size])
            offset = _aligned(offset + size)
        _shared[segment] = pickle.loads(parts[0], buffers=parts[1:])
    return _shared[segment]


class _SharedUnpickler(pickle.Unpickler):
    """Loads a payload whose big values stand as references to this host's segments."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.loaded: list[Any] = []

    def persistent_load(self, pid: Any) -> Any:
        kind, digest = pid
        if kind != "pp_shared":
            raise pickle.UnpicklingError(f"unknown reference {kind!r}")
        value = _load_segment(f"{_segment_prefix}-{digest}")
        self.loaded.append(value)
        return value


def _slots(fn: Callable, shared: list) -> list[tuple[Any, Any, Any]]:
    """Where the shared values sit in the task's reach: (globals dict or closure cell, name,
    value), for the task function and the functions it reaches through them."""
    if not shared:
        return []
    wanted = {id(value) for value in shared}
    slots: list[tuple[Any, Any, Any]] = []
    seen: set[int] = set()
    pending = [fn]
    while pending:
        function = pending.pop()
        if id(function) in seen or not isinstance(function, types.FunctionType):
            continue
        seen.add(id(function))
        places: list[tuple[Any, Any, Any]] = [
            (function.__globals__, name, value) for name, value in function.__globals__.items()]
        places += [(cell, None, cell.cell_contents) for cell in function.__closure__ or ()
                   if cell.cell_contents is not None]
        for container, name, value in places:
            if id(value) in wanted:
                slots.append((container, name, value))
            elif isinstance(value, types.FunctionType):
                pending.append(value)
    return slots


def _refresh(slots: list[tuple[Any, Any, Any]]) -> None:
    """Hand the task fresh shallow wrappers of the shared values: a column it adds or an
    in-place sort changes its wrapper only, never the cached value later tasks see."""
    for container, name, value in slots:
        fresh = _fresh(value)
        if name is None:
            container.cell_contents = fresh
        else:
            container[name] = fresh


def _fresh(value: Any) -> Any:
    copy = getattr(value, "copy", None)
    if type(value).__module__.startswith("pandas") and copy is not None:
        return copy(deep=False)  # pandas: a new frame over the same (read-only) data
    view = getattr(value, "view", None)
    if type(value).__module__ == "numpy" and view is not None:
        return view()  # numpy: a new array object over the same read-only memory
    return value


@atexit.register
def _remove_written() -> None:
    for path in list(_written):
        try:
            os.unlink(path)
        except OSError:
            pass


def _as_is(item: Any) -> Any:
    return item


def _run_item(fn: Callable, validate: Any, index: int, entry: Any,
              load: Callable[[Any], Any], timeout: float | None,
              memory_limit: int | None = None, redirect: bool = True) -> Outcome:
    """Run one item, `load(entry)`; its printed output goes to its own buffer (`redirect`: by
    swapping sys.stdout, else through the per-thread router that `_run_threaded` installed)."""
    output = _CappedOutput()
    started = time.time()
    t0 = time.perf_counter()
    if redirect:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = output
    else:
        _thread_output.local.output = output
    try:
        try:
            item = load(entry)
            _arm(timeout, index)
            try:
                value = fn(item)
                if type(value) is types.CoroutineType:  # an async def task: run it here
                    import asyncio

                    value = asyncio.run(value)
            finally:
                _disarm()
        finally:
            if redirect:
                sys.stdout, sys.stderr = saved
            else:
                _thread_output.local.output = None
    except TaskTimeout as exc:
        exc = exc if str(exc) else TaskTimeout(f"task exceeded its time limit of {timeout:g} s")
        return _failure(index, "timeout", exc, started, time.perf_counter() - t0, output.text())
    except MemoryError as exc:
        if memory_limit is not None:
            exc = MemoryError(f"task exceeded its memory limit of {memory_limit / 1e6:,.0f} MB"
                              + (f" ({exc})" if str(exc) else ""))
        return _failure(index, "memory", exc, started, time.perf_counter() - t0, output.text())
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


def _failure(index: int, status: Status, exc: BaseException, started: float, duration: float,
             output: str) -> Outcome:
    # Drop this module's own frame: the traceback starts in the user's code.
    tb_obj = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    tb = "".join(traceback.format_exception(type(exc), exc, tb_obj))
    message = str(exc)
    if _shared and isinstance(exc, ValueError) and "read-only" in message:
        message += (" (shared values are read-only on the engines: change a copy, "
                    "e.g. `x = x.copy()`)")
    return Outcome(index, status, None, type(exc).__name__, message, tb, output, started,
                   duration)


def _on_alarm(signum, frame):
    if _armed:
        raise TaskTimeout(f"task exceeded its time limit of {_limit:g} s")


def _arm(timeout: float | None, task: int) -> None:
    global _armed, _limit
    if timeout is None:
        return
    if threading.current_thread() is not threading.main_thread():
        with _deadlines_lock:
            _deadlines[threading.get_ident()] = _Limit(time.perf_counter() + timeout, task)
        return
    _limit = timeout
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, timeout, RETIMEOUT_INTERVAL)


def _disarm() -> None:
    global _armed
    if _deadlines:
        with _deadlines_lock:
            _deadlines.pop(threading.get_ident(), None)
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
    if kind == "f" and not (isinstance(value, (int, float, np.number))
                             and not isinstance(value, bool)):
        return f"{value!r} is not a number"
    if kind == "b" and not isinstance(value, (bool, np.bool_)):
        return f"{value!r} is not a bool"
    if kind == "U" and not isinstance(value, str):
        return f"{value!r} is not a str"
    return None


def _dump(outcomes: list[Outcome]) -> bytes:
    """Pickle the outcomes as columns, a tuple per Outcome field (10,000 outcomes are nine
    tuples, not 10,000: cheaper to write here and to read on the client, the busier side); a
    value that cannot be pickled becomes that item's error.

    Plain pickle first (twice as fast); cloudpickle for what only it can pickle, such as a
    function or an instance of a class that was shipped by value.
    """
    for dumps in (pickle.dumps, cloudpickle.dumps):
        try:
            return dumps(list(zip(*outcomes)), protocol=pickle.HIGHEST_PROTOCOL)
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
    return cloudpickle.dumps(list(zip(*safe)), protocol=pickle.HIGHEST_PROTOCOL)


class _TextSink:
    """What sys.stdout / sys.stderr must offer besides `write`, for a task's captured output."""

    encoding = "utf-8"

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class _ThreadOutput(_TextSink):
    """sys.stdout while tasks run in threads: each thread's writes go to its task's buffer."""

    def __init__(self) -> None:
        self.local = threading.local()

    def write(self, text: str) -> int:
        output = getattr(self.local, "output", None)
        return output.write(text) if output is not None else len(text)


_thread_output = _ThreadOutput()


class _CappedOutput(_TextSink):
    """A stdout/stderr stand-in that keeps the first OUTPUT_LIMIT characters of a task."""

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

    def text(self) -> str:
        if not self._parts:
            return ""
        text = "".join(self._parts)
        if self._dropped:
            text += f"\n[… {self._dropped} more characters of output cut]"
        return text
