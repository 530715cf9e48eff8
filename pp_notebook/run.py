"""A Run: a queue of items sent to engines in batches, watched until every item has an end.

One background thread owns the scheduling: it sends each engine at most two batches at a
time (pull-based load balancing through ipyparallel's direct views), reads the Outcomes as
they come back, requeues items of dead engines and failed attempts, enforces run-time limits
when the engine could not, and handles cancel. Nothing here knows of widgets: views read
`snapshot()`, which is cheap and immutable.
"""

from __future__ import annotations

import gc
import inspect
import logging
import pickle
import threading
import time
import types
import uuid
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple

import ipyparallel as ipp
import numpy as np
import pandas as pd
from ipyparallel.serialize import PrePickled

from . import cluster as cluster_module
from . import fmt
from .batching import BATCH_BUDGET_S, BATCH_BYTES, BatchPolicy
from .checkpoint import Checkpoint
from .cluster.autoscale import Demand
from .cluster.handle import EngineInfo, KernelCluster
from .engine import OVERDUE_KEY, run_batch
from .errors import NoRoomToShare, RunInterrupted
from .fmt import short_repr
from .options import RunOptions
from .records import Labels, Records, error_text, errors_frame, merged_frame
from .shipping import (
    ItemPickler,
    dumps,
    pack_pickled,
    pack_plain,
    refusal,
    unpicklable,
    warn_same_streams,
)
from .snapshot import (
    FAILED,
    EngineSnapshot,
    EngineState,
    Failure,
    Mark,
    PreviewRow,
    RunSnapshot,
    Shipment,
    Shipping,
    Status,
)
from .store import SHM_DIR, STORE, SharedValue, fits_in_shared_memory
from .summary import RunSummary, summarize
from .tasktable import PENDING, TaskQueue, TaskTable
from .tracebacks import SourceMap

TICK_S = 0.05
NO_ENGINE_GRACE_S = 60.0
CANCEL_GRACE_S = 5.0
CANCEL_ABORT_WAIT_S = 0.5
REPLACEMENT_WAIT_S = 15.0
CONTROLLER_CHECK_S = 0.5
DEATH_FACTS_WAIT_S = 0.5
"""An engine that died right after joining: how long to wait for its answer naming its pid
and host (already sent, it may still be on its way)."""
MARKS_KEPT = 500
"""Finished attempts a snapshot carries for timelines; views fold them into fixed-size
aggregates, so neither the Run nor a view grows with the task count."""
FAILURES_KEPT = 20
PREVIEW_ROWS = 5
"""Rows of results a snapshot previews: the first ones in input order and the latest."""
PREVIEW_SCAN = 1_000
RECLAIM_BYTES = 8 * 2 ** 20
RECLAIM_BYTES_PER_TASK = 8
"""Returned result bytes between two garbage collections (see Run._reclaim): RECLAIM_BYTES,
or RECLAIM_BYTES_PER_TASK for each of the run's tasks where that is more. A full collection
takes 0.04-0.1 s here: their number stays the same at any run size, and the garbage waiting
under 8 bytes a task."""
"""How far into the input the first-rows preview looks for finished items."""


class _EngineFailure(Exception):
    """A batch came back as an ipyparallel error instead of Outcomes."""


class _BatchCall(NamedTuple):
    """`run_batch` and the arguments every batch of a run shares, pickled once: ipyparallel
    pickles the function and each argument on every call, but passes a PrePickled through."""

    fn: PrePickled
    key: PrePickled
    none: PrePickled  # no payload; no finished runs to forget
    timeout: PrePickled
    concurrency: PrePickled
    memory_limit: PrePickled


@dataclass(eq=False)
class _Batch:
    engine: int
    indices: list[int]
    future: Any = None
    started: float | None = None  # monotonic: when it became the engine's running batch
    interrupted: float | None = None
    killed_for: str | None = None  # "timeout" | "cancel" when the client ended its engine
    abandoned: bool = False
    solo: bool = False  # a suspect item, sent to an idle engine and nothing queued behind it
    partner: _Batch | None = None  # the other copy of a speculated batch
    superseded: bool = False  # its partner finished every item first: it is being stopped
    finished: list[str] = field(default_factory=list)  # runs its engine is to forget first


@dataclass(eq=False)
class _EngineState:
    id: int
    inflight: deque[_Batch] = field(default_factory=deque)
    has_payload: bool = False
    done: int = 0
    failed: int = 0
    busy_s: float = 0.0
    clock_offset: float | None = None  # client clock minus engine clock
    dead: bool = False
    left: bool = False  # stopped on purpose (scale down, adaptive): not a failure
    host: str | None = None  # kept once known: a dead engine's facts leave the cluster's list
    pid: int | None = None
    job: str | None = None


class Run:
    """Items mapped over the cluster's engines. `pp_notebook.map` returns one, started.

    Built, a Run holds its items as records and checks that its task can be sent; `start()`
    sends it to a cluster's engines from one scheduling thread. Results, errors, summary and
    snapshots can be read at any time.
    """

    def __init__(self, fn: Callable, items: Iterable, options: RunOptions | None = None, *,
                 labels: Labels | None = None) -> None:
        self.options = options = options if options is not None else RunOptions()
        self._labels = labels
        try:
            items = items if isinstance(items, range) else list(items)
        except TypeError:
            raise TypeError(f"items must be iterable (a list, range, generator, ...), "
                            f"not {type(items).__name__}") from None
        for value in options.share:
            STORE.mark(value)
        self._shared: list[SharedValue] = []  # the big values the task reaches, by reference
        self._payload = _pickle_payload(fn, options.validate, self._shared)
        self._shipments: dict[str, list[float]] = {}  # digest -> [seconds, hosts shipped to]
        self._shipping_now: str | None = None
        self._sources = SourceMap([fn, options.validate])
        self.fn = fn
        self._table = table = TaskTable(items)
        self._checkpoint: Checkpoint | None = None
        self._keys: list[str] = []
        if options.checkpoint is not None:
            self._checkpoint = Checkpoint(options.checkpoint, options.key)
            self._keys = [self._checkpoint.key_of(item) for item in items]
            self._checkpoint.restore(table, self._keys)
        self._cluster: KernelCluster | None = None
        self._key = uuid.uuid4().hex
        self._call: _BatchCall | None = None
        self._pickler = ItemPickler()
        self._queue = TaskQueue(np.flatnonzero(table.status == PENDING))
        self._counts = {"pending": len(self._queue)}
        if len(self._queue) < len(items):
            self._counts["ok"] = len(items) - len(self._queue)
        self._solo: set[int] = set()  # items to run alone: they were in a batch that died
        self._retried = 0
        self._marks: deque[tuple] = deque(maxlen=MARKS_KEPT)  # Mark's fields, item aside
        self._marks_total = 0
        self._failures: deque[Failure] = deque(maxlen=FAILURES_KEPT)
        self._latest: deque[int] = deque(maxlen=PREVIEW_ROWS)
        self._engines: dict[int, _EngineState] = {}
        self._peak_engines = 0
        self._policy = BatchPolicy(options.batch, options.concurrency)
        self._events: SimpleQueue = SimpleQueue()
        self._msg_ids: set[str] = set()  # pruned from the client's history at the end
        self._unreclaimed = 0  # result bytes returned since the last garbage collection
        self._replacements = 0
        self._cancel_requested = False
        self._cancelling = False
        self._no_engines_since: float | None = None
        self._controller_checked = 0.0
        self._done = threading.Event()  # every item has its end: results are final
        self._settled = threading.Event()  # and the done-callbacks have run
        self._done_callbacks: list[Callable[[Run], Any]] = []
        self._callbacks_lock = threading.Lock()
        self._started_at = time.time()
        self._started_mono = time.monotonic()
        self._ended_mono: float | None = None
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="pp_notebook-run", daemon=True)
        self._demand_source = self.demand

    def start(self, cluster: KernelCluster | None = None) -> Run:
        """Send the items to `cluster`'s engines (default: the kernel's cluster, started if
        need be) from the scheduling thread; returns at once."""
        self._cluster = cluster if cluster is not None else cluster_module.current()
        evicted = STORE.take_dropped()  # the store's size limit: they leave the hosts too
        if evicted:
            self._cluster.drop_shared([value.digest for value in evicted])
        self._started_at = time.time()
        self._started_mono = time.monotonic()
        self._cluster.follow(self._demand_source)
        self._thread.start()
        return self

    # -- public ----------------------------------------------------------------------

    @property
    def records(self) -> Records:
        """Every item's TaskRecord, in input order: a read-only view whose records are built
        when read (the run keeps its bookkeeping in columns, see tasktable.py)."""
        return Records(self._table)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every item has ended (or `timeout` s); True when done.

        A KeyboardInterrupt (the notebook's stop button) cancels the run, keeps every
        finished result, and raises RunInterrupted (a KeyboardInterrupt) once the engines
        have stopped, so an interrupted cell ends as an interrupted cell.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # Callers wait for the done-callbacks too (a background cell's line is updated before
        # wait() returns), except a callback itself, which runs on the scheduling thread.
        ended = self._done if threading.current_thread() is self._thread else self._settled
        try:
            while not ended.wait(0.1):
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait(CANCEL_GRACE_S * 2)
            raise RunInterrupted(self.interrupted_text(), self) from None
        return True

    def interrupted_text(self, where: str = "pp_notebook.last_run().result()") -> str:
        """What an interrupt left: how many items ended, how many were cancelled, and where
        the kept results are."""
        snap = self.snapshot()
        return (f"the run was interrupted: {snap.finished - snap.cancelled} of {snap.total} "
                f"tasks had ended and are kept, {snap.cancelled} are marked `cancelled`; "
                f"the results so far: {where}")

    def cancel(self) -> None:
        """Drop queued items, interrupt running ones; finished results stay."""
        self._cancel_requested = True
        self._events.put(None)

    def add_done_callback(self, fn: Callable[[Run], Any]) -> None:
        """Call `fn(run)` once the run has ended (at once if it has), as futures do. It runs
        on the scheduling thread: keep it short."""
        with self._callbacks_lock:
            if not self.done:
                self._done_callbacks.append(fn)
                return
        _call(fn, self)

    def result(self, timeout: float | None = None, *, wait: bool = True) -> pd.DataFrame:
        """The merged DataFrame, in input order, once the run has ended.

        Blocks like `concurrent.futures.Future.result()`: `timeout` seconds at most, then
        TimeoutError. `wait=False` gives the live partial frame at once (unfinished items say
        `pending`). An interrupt while waiting cancels the run and raises RunInterrupted.
        """
        if wait:
            self._wait_or_raise(timeout)
        validate = self.options.validate
        schema = validate if isinstance(validate, dict) else None
        return merged_frame(self._table, schema, self._labels)

    def errors(self, timeout: float | None = None, *, wait: bool = True) -> pd.DataFrame:
        """One row per failed item, with its error type, message and traceback; waits for the
        run to end, as `result()` does (cancelled items are not failures and are not here)."""
        if wait:
            self._wait_or_raise(timeout)
        return errors_frame(self._table)

    def _wait_or_raise(self, timeout: float | None) -> None:
        if not self.wait(timeout):
            raise TimeoutError(f"the run did not end within {timeout:g} s "
                               f"({self.snapshot().finished} of {len(self._table)} tasks "
                               "have ended); result(wait=False) gives the rows so far")

    def summary(self) -> RunSummary:
        """Wall time, summed task time, speedup, and per engine utilisation and failures, of the
        run so far (it does not wait)."""
        return summarize(self._table, self.elapsed_s, self._peak_engines or None,
                         shipments=self.shipments())

    def plot(self) -> Any:
        """A matplotlib Figure: each engine's task timeline and the duration histogram, of the
        run so far (it does not wait)."""
        from .views.plots import plot_run  # matplotlib takes 0.3 s to load: only when asked

        return plot_run(self._table, self._started_at)

    @property
    def queued(self) -> int:
        """Items not yet sent to any engine."""
        return len(self._queue)

    @property
    def cluster(self) -> KernelCluster | None:
        """The cluster the run was started on (None before `start()`)."""
        return self._cluster

    @property
    def _started_cluster(self) -> KernelCluster:
        """The cluster, for the scheduling thread: it runs only after `start()` set it."""
        assert self._cluster is not None, "the run has not been started"
        return self._cluster

    @property
    def key(self) -> str:
        """The run's name on the engines, under which they keep its task until it ends."""
        return self._key

    @property
    def message_ids(self) -> frozenset[str]:
        """The ipyparallel messages this run sent; pruned from the client's history at its end."""
        return frozenset(self._msg_ids)

    def demand(self) -> Demand:
        """What this run asks of the engines now, for the autoscaler."""
        return Demand(len(self._queue), {e.id: e.state for e in self._engine_snapshots()})

    @property
    def started_at(self) -> float:
        """When the run started, on the client's clock (epoch seconds, like `record.started`)."""
        return self._started_at

    @property
    def elapsed_s(self) -> float:
        end = self._ended_mono if self._ended_mono is not None else time.monotonic()
        return end - self._started_mono

    def snapshot(self) -> RunSnapshot:
        """An immutable picture of the run for views; costs O(engines), not O(tasks)."""
        sent = sum(s.has_payload for s in self._engines.values())
        return RunSnapshot(
            total=len(self._table), counts=dict(self._counts), retried=self._retried,
            elapsed_s=self.elapsed_s, done=self.done, engines=self._engine_snapshots(),
            marks=tuple(Mark(task, short_repr(self._table.item(task)), *rest)
                        for task, *rest in list(self._marks)),
            marks_total=self._marks_total,
            failures=tuple(self._failures), first_rows=self._first_rows(),
            latest_rows=tuple(self._preview(i) for i in list(self._latest)),
            shipping=Shipping(len(self._payload), sent, len(self._engines),
                              self.shipments(), self._shipping_now),
            not_granted=tuple(self._cluster.not_granted) if self._cluster is not None else ())

    def _engine_snapshots(self) -> tuple[EngineSnapshot, ...]:
        """Each engine's state and running task: what views and the autoscaler see."""
        now = time.monotonic()
        infos = self._cluster.engines if self._cluster is not None else {}
        retiring = self._cluster.retiring if self._cluster is not None else set()
        engines = []
        for state in list(self._engines.values()):
            _learn(state, infos.get(state.id))
            running = state.inflight[0] if state.inflight else None
            label: EngineState
            if state.dead:
                label = "left" if state.left else "dead"
            elif state.id in retiring:
                label = "retiring"
            elif state.pid is None:
                label = "starting"
            else:
                label = "busy" if running is not None else "idle"
            engines.append(EngineSnapshot(
                id=state.id, host=state.host, pid=state.pid, job=state.job,
                state=label, done=state.done, failed=state.failed, busy_s=state.busy_s,
                running_task=running.indices[0] if running is not None else None,
                running_for_s=(now - running.started) if running is not None
                and running.started is not None else None,
                running_item=short_repr(self._table.item(running.indices[0]))
                if running is not None else None))
        return tuple(engines)

    def _first_rows(self) -> tuple[PreviewRow, ...]:
        """The first finished items in input order (looking at most PREVIEW_SCAN deep)."""
        finished = np.flatnonzero(self._table.status[:PREVIEW_SCAN] != PENDING)
        return tuple(self._preview(task) for task in finished[:PREVIEW_ROWS].tolist())

    def _preview(self, index: int) -> PreviewRow:
        table = self._table
        status = table.status_of(index)
        value = short_repr(table.values[index], 60) if status == "ok" \
            else error_text(*table.error_of(index)) or ""
        return PreviewRow(index, short_repr(table.item(index)), status, value)

    def __repr__(self) -> str:
        snap = self.snapshot()
        state = "done" if snap.done else "running"
        cancelled = f", {snap.cancelled} cancelled" if snap.cancelled else ""
        return (f"<Run {state}: {snap.completed}/{snap.total} finished, "
                f"{snap.failed} failed{cancelled}, {snap.elapsed_s:.1f} s>")

    # -- the scheduling thread ---------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                self._sync_engines()
                if self._cancel_requested and not self._cancelling:
                    self._begin_cancel()
                if not self._cancelling:
                    self._dispatch()
                    if self.options.speculate and not self._queue:
                        self._speculate()
                if not self._queue and not any(e.inflight for e in self._engines.values()):
                    break
                self._handle_events()
                self._watchdog()
            self._ended_mono = time.monotonic()
            # A cancel hands control back now (the next run takes the replacements as they
            # register); a stopped cluster has none coming.
            if not self._cancel_requested and not self._started_cluster.stopped:
                self._await_replacements()
        except BaseException as exc:  # never lose what finished: end the rest with a reason
            self.failure = exc
            self._end_remaining("lost", f"the run stopped: {type(exc).__name__}: {exc}")
        finally:
            if self._ended_mono is None:
                self._ended_mono = time.monotonic()
            if self._checkpoint is not None:
                self._checkpoint.close()
            self._started_cluster.unfollow(self._demand_source)
            with self._callbacks_lock:
                self._done.set()
                callbacks, self._done_callbacks = self._done_callbacks, []
            self._clean_up()
            for callback in callbacks:
                _call(callback, self)
            self._settled.set()

    def _await_replacements(self) -> None:
        """Return the cluster whole: wait (bounded) for engines started in place of dead ones."""
        if not self._replacements:
            return
        cluster = self._started_cluster
        deadline = time.monotonic() + REPLACEMENT_WAIT_S
        while len(cluster.live_ids()) < self._peak_engines and time.monotonic() < deadline:
            cluster.refresh()
            if not cluster.waiting():
                break  # none is coming: those asked for were given up
            time.sleep(0.05)
        cluster.wait_for_info(max(0.0, deadline - time.monotonic()))

    def _sync_engines(self) -> None:
        self._check_controller()
        cluster = self._started_cluster
        if cluster.stopped:  # the run has ended its rest: no engine of it is to be replaced
            return
        for state in self._engines.values():
            if state.pid is None:  # kept: a dead engine's facts leave the cluster's list
                _learn(state, cluster.facts(state.id))
        live = set(cluster.refresh())
        for eid in live - set(self._engines):
            if cluster.answered(eid):  # it takes work then: a death after that names its pid
                self._engines[eid] = _EngineState(eid)
        for state in self._engines.values():
            if not state.dead and state.id not in live:
                if state.id in cluster.retiring and not state.inflight:
                    state.dead = state.left = True  # stopped on purpose, idle: nothing to do
                else:
                    self._engine_lost(state, "died" if cluster.ended(state.id)
                                      else "left the cluster")
        alive = [s for s in self._engines.values() if not s.dead]
        self._peak_engines = max(self._peak_engines, len(alive))
        if alive:
            self._no_engines_since = None
            return
        if self._no_engines_since is None:
            self._no_engines_since = time.monotonic()
        # None will come when every one asked for was given up (and no autoscaler asks again)
        hopeless = cluster.owned and cluster.not_granted and not cluster.waiting() \
            and cluster.autoscaler is None
        if hopeless or time.monotonic() - self._no_engines_since > NO_ENGINE_GRACE_S:
            why = f": {cluster.not_granted[-1].reason}" if cluster.not_granted else ""
            self._end_remaining("lost", f"no engine is left and none could be started{why}; "
                                        "check pp_notebook.status() and restart the cluster")

    def _check_controller(self) -> None:
        """End the run with a clear reason, keeping every result, if the controller died."""
        now = time.monotonic()
        cluster = self._started_cluster
        if now - self._controller_checked < CONTROLLER_CHECK_S and not cluster.stopped:
            return
        self._controller_checked = now
        death = cluster.controller_death()
        if death is not None and (self._queue or any(e.inflight for e in self._engines.values())):
            finished = len(self._table) - self._counts.get("pending", 0)
            what_next = "pp_notebook.start() starts a new cluster" if cluster.owned else \
                "pp_notebook.connect() to it once it is back, or pp_notebook.start() a local one"
            self.failure = cluster_module.ClusterError(
                f"{death} during the run. The {finished} tasks that had ended are kept; "
                f"{what_next} (pass checkpoint= to skip finished items when you run again).")
            self._end_remaining("lost", str(self.failure))

    def _dispatch(self) -> None:
        """Fill each engine up to the policy's depth of batches; a suspect item runs alone.
        The batches sent at one time are of one size, the policy's for the queue as it was:
        a run's first dispatch spreads a short run whole over every engine's slots. At the
        tail of a run of even tasks, an engine takes its share of what is left instead: the
        items that make it end with the others (BatchPolicy.share), by how long each is
        expected to be busy (computed once a dispatch, then counted up as batches go)."""
        sent = True
        engines = self._live_engines()
        size = self._policy.batch_size(len(self._queue), engines)
        busy = self._busy_times() \
            if self._policy.even() and self._policy.at_tail(len(self._queue), engines) else None
        busy_total = sum(busy.values()) if busy is not None else 0.0
        while self._queue and sent:
            sent = False
            depth = self._policy.depth(len(self._queue), engines)
            ready = [s for s in self._engines.values()
                     if self._takes_more(s) and len(s.inflight) < depth]
            for state in sorted(ready, key=lambda s: len(s.inflight)):
                if not self._queue:
                    return
                if self._queue.peek() in self._solo and state.inflight:
                    continue  # only an idle engine takes a suspect: its death then names it
                if busy is not None:
                    size = self._policy.share(len(self._queue), busy[state.id],
                                              busy_total - busy[state.id], len(busy) - 1)
                    if not size:
                        continue
                batch = self._send(state, self._take(size))
                if busy is not None and batch is not None:
                    added = len(batch.indices) * (self._policy.mean_item_s() or 0.0)
                    busy[state.id] += added
                    busy_total += added
                # Hand the GIL to ipyparallel's IO thread, which sends the batch now: otherwise
                # it waits for the whole dispatch (at 64 engines, 0.2 s before the last starts).
                time.sleep(0)
                sent = True

    def _busy_times(self) -> dict[int, float]:
        """How long each engine that takes more work (`_takes_more`) is expected to be busy
        with the batches it holds."""
        now, mean = time.monotonic(), self._policy.mean_item_s() or 0.0
        busy = {}
        for state in self._engines.values():
            if not self._takes_more(state):
                continue
            running = state.inflight[0] if state.inflight else None
            ran = now - running.started if running is not None and running.started else 0.0
            busy[state.id] = max(0.0, sum(len(b.indices) for b in state.inflight) * mean - ran)
        return busy

    def _live_engines(self) -> int:
        return sum(not s.dead for s in self._engines.values())

    def _takes_work(self, state: _EngineState) -> bool:
        """Alive, and not being stopped on purpose."""
        return not state.dead and state.id not in self._started_cluster.retiring

    def _takes_more(self, state: _EngineState) -> bool:
        """Takes work, and holds no suspect (it takes no more until that one is done)."""
        return self._takes_work(state) and not any(b.solo for b in state.inflight)

    def _speculate(self) -> None:
        """Back up an overdue running batch on an idle engine; the first copy to finish wins."""
        idle = [s for s in self._engines.values() if self._takes_work(s) and not s.inflight]
        if not idle:
            return
        now = time.monotonic()
        running = [(s.inflight[0].started, s.inflight[0]) for s in self._engines.values()
                   if not s.dead and s.inflight and s.inflight[0].started is not None
                   and s.inflight[0].partner is None]
        for started, batch in sorted(running, key=lambda pair: pair[0]):
            if not idle or not self._policy.overdue(len(batch.indices), now - started):
                continue
            pending = [i for i in batch.indices if self._table.is_pending(i)]
            backup = self._send(idle.pop(), pending) if pending else None
            if backup is not None:
                batch.partner, backup.partner = backup, batch

    def _take(self, size: int) -> list[int]:
        return self._queue.take(size, alone=self._solo)

    def _send(self, state: _EngineState, indices: list[int]) -> _Batch | None:
        values = self._table.items[indices].tolist()
        items = pack_plain(indices, values, BATCH_BYTES)
        if items is None:
            indices, items = self._pickle_each(indices, values)
        if not indices:
            return None
        batch = _Batch(state.id, indices, solo=indices[0] in self._solo,
                       finished=self._started_cluster.finished_runs.take(state.id))
        payload = None if state.has_payload else self._ship_shared(state)
        state.has_payload = True
        if not state.inflight:
            batch.started = time.monotonic()
        state.inflight.append(batch)
        call = self._batch_call()
        batch.future = self._started_cluster.send_batch(state.id, call.fn, [
            call.key, call.none if payload is None else payload, items, call.timeout,
            self._policy.budget(len(indices)), call.concurrency, call.memory_limit,
            PrePickled(batch.finished) if batch.finished else call.none])
        # The future holds its batch weakly: a cycle would keep every returned batch (its
        # indices, its outcomes' bytes) until a full garbage collection, ~80 bytes a task.
        # A batch dropped before its future ends was abandoned: its event is a mere wake-up.
        held = weakref.ref(batch)
        batch.future.add_done_callback(lambda _f: self._events.put(held()))
        self._msg_ids.add(batch.future.msg_id)
        return batch

    def _pickle_each(self, indices: list[int], values: list) -> tuple[list[int], bytes]:
        """Items pickled one by one (the engine loads each in its own task): one that cannot
        be pickled ends as its own error, and big ones past BATCH_BYTES wait for later
        batches. Returns the indices sent and the batch's items."""
        sent: list[int] = []
        pickles: list[bytes] = []
        nbytes = 0
        for position, (index, item) in enumerate(zip(indices, values)):
            if nbytes > BATCH_BYTES:  # big items: the rest go in later batches
                self._queue.push_front(indices[position:])
                break
            try:
                pickles.append(self._pickler.dumps(item))
            except Exception as exc:  # no retry: it would fail the same way
                self._table.attempts[index] += 1
                self._finish(index, "error", retry=False, error_type=type(exc).__name__,
                             error=f"item {index} ({type(item).__name__}) "
                                   f"cannot be sent to an engine: {exc}")
                continue
            sent.append(index)
            nbytes += len(pickles[-1])
        return sent, pack_pickled(sent, pickles)

    def _batch_call(self) -> _BatchCall:
        """The run's shared call parts, pickled on first use: by then the engines' set-up
        has chosen the pickler (cloudpickle) that ipyparallel serialises with."""
        if self._call is None:
            options = self.options
            self._call = _BatchCall(*map(PrePickled, (
                run_batch, self._key, None, options.timeout, options.concurrency,
                options.memory_limit)))
        return self._call

    def _ship_shared(self, state: _EngineState) -> bytes:
        """Before an engine's first batch, make sure its host holds the run's shared values
        (shipping them there once); returns the payload to send it."""
        cluster = self._started_cluster
        for value in self._shared:
            self._shipping_now = value.name
            try:
                seconds = cluster.share(value, state.id)
            except Exception as exc:  # no room, or the host refused: send the value inline
                warnings.warn(NoRoomToShare(
                    f"`{value.name}` could not be written to engine {state.id}'s host "
                    f"({type(exc).__name__}: {exc}); it goes with the task instead"),
                    stacklevel=2)
                self._shared = []
                self._payload = _pickle_payload(self.fn, self.options.validate, None)
                break
            finally:
                self._shipping_now = None
            record = self._shipments.setdefault(value.digest, [0.0, 0])
            if seconds is not None:
                record[0] += seconds
                record[1] += 1
        return self._payload

    def shipments(self) -> tuple[Shipment, ...]:
        """What the run did with each shared value: shipped to how many hosts in how long,
        or reused from an earlier run."""
        out = []
        for value in list(self._shared):
            if value.digest in self._shipments:  # checked against a host already
                seconds, hosts = self._shipments[value.digest]
                out.append(Shipment(value.name, value.nbytes, int(hosts), seconds, hosts == 0))
        return tuple(out)

    def _handle_events(self) -> None:
        try:
            event = self._events.get(timeout=TICK_S)
        except Empty:
            return
        while True:
            if event is not None:
                self._batch_returned(event)
            try:
                event = self._events.get_nowait()
            except Empty:
                break
        if self._checkpoint is not None:
            self._checkpoint.flush()  # once per wake-up: a few fsyncs a second at most

    def _batch_returned(self, batch: _Batch) -> None:
        if batch.abandoned:
            return
        state = self._engines[batch.engine]
        try:
            columns, nbytes = _outcomes_of(batch.future)
        except _EngineFailure as failure:
            kind, message = failure.args
            if kind == "EngineError":
                self._engine_lost(state, "died")
                return
            self._release(state, batch)
            if kind == "TaskAborted":  # it never ran: its engine still holds those runs
                self._started_cluster.finished_runs.add(batch.finished, [state.id])
            status: Status = "cancelled" if kind == "TaskAborted" else "error"
            for index in batch.indices:
                if self._table.is_pending(index):
                    self._table.attempts[index] += status == "error"
                    self._finish(index, status, error_type=kind, error=message)
            return
        self._release(state, batch)
        self._reclaim(nbytes)
        if columns:  # the engine's clock against ours; the smallest gap is the closest
            *_, started, duration = columns
            offset = time.time() - (started[-1] + duration[-1])
            if state.clock_offset is None or offset < state.clock_offset:
                state.clock_offset = offset
        _learn(state, self._started_cluster.engines.get(state.id))
        self._apply_outcomes(state, self._table.host_code(state.host), state.pid, columns)
        seen = set(columns[0]) if columns else set()  # their items' indices
        for index in reversed(self._uncovered(batch, batch.indices)):
            if index not in seen:  # not started: the batch ran out of budget, or cancel
                if self._cancelling:
                    self._finish(index, "cancelled", error="the run was cancelled")
                else:
                    self._queue.push_front([index])
        self._supersede(batch.partner)

    def _reclaim(self, nbytes: int) -> None:
        """Collect garbage once enough results have come back since the last time (see
        RECLAIM_BYTES).

        ipyparallel's AsyncResult is a reference cycle (its callbacks are its own methods), so
        each returned batch's bytes wait for a full collection; Python runs one only when
        garbage is many objects, not when it is few and big (1,000,000 no-ops left ~40 bytes a
        task behind)."""
        self._unreclaimed += nbytes
        if self._unreclaimed >= max(RECLAIM_BYTES, RECLAIM_BYTES_PER_TASK * len(self._table)):
            self._unreclaimed = 0
            gc.collect()

    def _uncovered(self, batch: _Batch, indices: list[int]) -> list[int]:
        """Of `indices`, those still pending and not held by the batch's live other copy."""
        partner = batch.partner
        covered = set(partner.indices) if partner is not None and not partner.abandoned \
            and partner.future is not None and not partner.future.done() else ()
        return [i for i in indices if self._table.is_pending(i) and i not in covered]

    def _supersede(self, batch: _Batch | None) -> None:
        """Stop the other copy of a speculated batch once every item it holds has ended."""
        if batch is None or batch.abandoned or batch.superseded or batch.future.done() \
                or any(self._table.is_pending(i) for i in batch.indices):
            return
        batch.superseded = True
        self._interrupt(self._engines[batch.engine], batch)

    def _release(self, state: _EngineState, batch: _Batch) -> None:
        if batch in state.inflight:
            state.inflight.remove(batch)
        if state.inflight and state.inflight[0].started is None:
            state.inflight[0].started = time.monotonic()

    def _apply_outcomes(self, state: _EngineState, host: int, pid: int | None,
                        columns: list[Sequence[Any]]) -> None:
        """Record a returned batch's attempts (its outcomes' columns) all at once, then each
        item's end (this runs for every item: the common case, all ok, is a few array
        writes)."""
        table = self._table
        if not columns:
            return
        tasks = np.fromiter(columns[0], np.int64, len(columns[0]))
        fresh = table.status[tasks] == PENDING
        state.busy_s += sum(columns[8])
        if not fresh.all():  # the other copy of a speculated item won
            columns = [[c for c, pending in zip(column, fresh.tolist()) if pending]
                       for column in columns]
            tasks = tasks[fresh]
            if not len(tasks):
                return
        index, status, value, error_type, error, traceback, output, started, duration = columns
        durations = np.fromiter(duration, float, len(tasks))
        table.set_attempts(tasks, state.id, host, pid,
                           np.fromiter(started, float, len(tasks)) + (state.clock_offset or 0.0),
                           durations, output)
        self._log_attempts(index, status)
        self._policy.observe(float(durations.sum()), len(durations),
                             float(durations @ durations))
        if status.count("ok") == len(status):
            state.done += len(status)
            self._finish_ok(tasks, value)
            return
        ok = [i for i, end in enumerate(status) if end == "ok"]
        state.done += len(ok)
        self._finish_ok(tasks[ok], [value[i] for i in ok])
        for i in (i for i, end in enumerate(status) if end != "ok"):
            if status[i] == "cancelled" and not self._cancelling:
                table.attempts[index[i]] -= 1  # an interrupt not meant for it: run it again
                self._queue.push_front([index[i]])
                continue
            state.done += status[i] != "cancelled"  # an interrupted task did not get done
            state.failed += status[i] in FAILED
            self._finish(index[i], status[i], value=value[i], error_type=error_type[i],
                         error=error[i], traceback=self._sources.repair(traceback[i]))

    def _finish_ok(self, tasks: np.ndarray, values: Sequence[Any]) -> None:
        """Give pending tasks their successful end, all at once."""
        if not len(tasks):
            return
        self._counts["pending"] -= len(tasks)
        self._counts["ok"] = self._counts.get("ok", 0) + len(tasks)
        self._table.set_ok(tasks, values)
        self._latest.extend(tasks[-PREVIEW_ROWS:].tolist())
        if self._checkpoint is not None:
            for task in tasks.tolist():
                self._checkpoint.add(self._keys[task], self._table, task)

    def _finish(self, index: int, status: Status, *, value: Any = None,
                error_type: str | None = None, error: str | None = None,
                traceback: str | None = None, retry: bool = True) -> None:
        """Give a task an end other than ok (see _finish_ok), or requeue it while it has
        retries left."""
        table = self._table
        table.set_error(index, error_type, error, traceback)
        if retry and status in FAILED \
                and table.attempts[index] <= self.options.retries and not self._cancelling:
            self._retried += 1
            self._queue.push_back([index])
            return
        old = table.status_of(index)
        if old != status:
            self._counts[old] -= 1
            self._counts[status] = self._counts.get(status, 0) + 1
            table.set_status(index, status)
        table.values[index] = value
        self._latest.append(index)
        if status in FAILED:
            self._failures.append(Failure(index, short_repr(table.item(index)), status,
                                          error_text(error_type, error) or "", traceback))

    def _log_attempts(self, tasks: Sequence[int], statuses: Sequence[Status]) -> None:
        """Keep finished attempts for the timeline: the latest MARKS_KEPT, as tuples."""
        kept, table = list(tasks[-MARKS_KEPT:]), self._table
        self._marks.extend(zip(kept, table.engine[kept].tolist(),
                               (table.started[kept] - self._started_at).tolist(),
                               table.duration_s[kept].tolist(), statuses[-MARKS_KEPT:]))
        self._marks_total += len(tasks)

    def _engine_lost(self, state: _EngineState, how: str) -> None:
        """Requeue what a dead engine held; charge an attempt only to a proven culprit.

        The culprit is proven when the engine held one batch of one item (a suspect sent
        alone), when the client ended it for ignoring its timeout while running one item, or
        when the engine named the items whose threads ran past their limit (concurrency > 1):
        then the others of its batches run again, uncharged. Otherwise the first batch may
        have finished just before the death (ipyparallel can report it failed), so every item
        it held runs again alone, uncharged, until a death names its culprit.
        """
        state.dead = True
        cluster = self._started_cluster
        batches, state.inflight = list(state.inflight), deque()
        _learn(state, cluster.facts(state.id, wait=DEATH_FACTS_WAIT_S))
        where = f"engine {state.id}" + (f" (pid {state.pid} on {state.host})"
                                         if state.pid is not None else "")
        running = batches[0] if batches and batches[0].started is not None else None
        if running is not None and running.interrupted is not None \
                and running.killed_for is None:  # it ignored the interrupt: end it (frozen?)
            running.killed_for = self._interrupted_for(running)
            cluster.kill_engine(state.id, state.pid, state.host)
        culprits = self._culprits(running, alone=len(batches) == 1)
        for batch in batches:
            batch.abandoned = True
            indices = self._uncovered(batch, batch.indices)
            if self._cancelling and batch.killed_for != "timeout":
                for index in indices:
                    self._finish(index, "cancelled", error="the run was cancelled")
                continue
            charged = [i for i in indices if i in culprits] if batch is running else []
            innocent = [i for i in indices if i not in charged]
            if running is not None and not culprits:
                self._solo.update(innocent)
            self._queue.push_front(innocent)
            for index in charged:
                self._charge_death(index, state.id, batch, where, how)
        if cluster.owned and not cluster.stopped and not self._cancelling \
                and state.id not in cluster.retiring:
            try:
                cluster.add_engines(1, wait=False)
                self._replacements += 1
            except cluster_module.ClusterError:  # stopped meanwhile: the next tick ends the run
                pass

    def _culprits(self, running: _Batch | None, alone: bool) -> set[int]:
        """The items of the dead engine's running batch to blame for its death: those its
        engine named as overdue when the client ended it for a timeout, else its one item
        when nothing else can be blamed; empty when unproven."""
        if running is None:
            return set()
        if running.killed_for == "timeout":
            published = self._started_cluster.published(running.future)
            named = set(published.get(OVERDUE_KEY, ())) & set(running.indices)
            if named:
                return named
        if len(running.indices) == 1 and (alone or running.killed_for == "timeout"):
            return set(running.indices)
        return set()

    def _charge_death(self, index: int, engine: int, batch: _Batch, where: str,
                      how: str) -> None:
        """An attempt of task `index` ended with its engine: a timeout when the client ended
        the engine for it, else `lost` (retried while it has retries left)."""
        assert batch.started is not None  # it is the engine's running batch
        duration = time.monotonic() - batch.started  # the client's estimate
        table = self._table
        table.attempts[index] += 1
        table.engine[index], table.duration_s[index] = engine, duration
        table.started[index] = time.time() - duration
        self._log_attempts([index], ["timeout" if batch.killed_for == "timeout" else "lost"])
        if batch.killed_for == "timeout":
            self._finish(index, "timeout", error_type="TaskTimeout",
                         error=f"task ignored its time limit of {self.options.timeout:g} s "
                               f"and the interrupt; {where} was ended and replaced")
        else:
            self._finish(index, "lost", error_type="EngineDied",
                         error=f"{where} {how} while running this task "
                               f"(attempt {table.attempts[index]} of {self.options.retries + 1})")

    def _watchdog(self) -> None:
        """End tasks that ignored their timeout, and engines that ignored a cancel."""
        now = time.monotonic()
        timeout = self.options.timeout
        grace = 1.0 + 0.1 * (timeout or 0.0)
        for state in list(self._engines.values()):
            if state.dead or not state.inflight:
                continue
            batch = state.inflight[0]
            if self._cancelling and batch.interrupted is None:
                # It was queued behind the running batch when the cancel came, and started
                # before the abort reached the engine: interrupt it now as well.
                batch.started = batch.started if batch.started is not None else now
                self._interrupt(state, batch)
                continue
            if batch.started is None:
                continue
            if batch.interrupted is not None:
                if now - batch.interrupted > (CANCEL_GRACE_S if self._cancelling else grace):
                    batch.killed_for = self._interrupted_for(batch)
                    self._started_cluster.kill_engine(state.id, state.pid, state.host)
                    self._engine_lost(state, "was ended")
            elif timeout is not None and now - batch.started > BATCH_BUDGET_S + timeout + grace:
                self._interrupt(state, batch)

    def _interrupt(self, state: _EngineState, batch: _Batch) -> None:
        """Raise KeyboardInterrupt in `state`'s running task, `batch`'s."""
        batch.interrupted = time.monotonic()
        self._started_cluster.interrupt_engine(state.id)

    def _interrupted_for(self, batch: _Batch) -> str:
        """Why the client interrupted a running batch: the cancel (of the run, or of a copy
        another engine finished first), else its timeout."""
        return "cancel" if self._cancelling or batch.superseded else "timeout"

    def _begin_cancel(self) -> None:
        self._cancelling = True
        for index in self._queue:
            self._finish(index, "cancelled", error="the run was cancelled")
        self._queue.clear()
        client = self._started_cluster.client
        busy = [s for s in self._engines.values() if not s.dead and s.inflight]
        # Abort every batch, the running one too, and interrupt only once the engines have
        # the aborts: an engine ignores SIGINT between two requests, so an interrupt that
        # lands just before a batch starts is lost, and the abort must then skip that batch.
        aborts = []
        for state in busy:
            try:
                aborts.append(client.abort([b.future.msg_id for b in state.inflight],
                                           targets=[state.id], block=False))
            except Exception:  # it left the cluster meanwhile: the run sees it next
                pass
        futures_wait(aborts, timeout=CANCEL_ABORT_WAIT_S)
        for state in busy:
            if state.inflight[0].started is None:
                state.inflight[0].started = time.monotonic()
            self._interrupt(state, state.inflight[0])

    def _end_remaining(self, status: Status, reason: str) -> None:
        for state in self._engines.values():
            for batch in state.inflight:
                batch.abandoned = True
                self._queue.push_back(batch.indices)
            state.inflight.clear()
        for index in np.unique(np.fromiter(self._queue, np.int64, len(self._queue))).tolist():
            if self._table.is_pending(index):
                self._finish(index, status, error_type="RunStopped", error=reason, retry=False)
        self._queue.clear()

    def _clean_up(self) -> None:
        """Have the engines drop this run's function (cluster/finished_runs.py) and the client
        its messages."""
        cluster = self._started_cluster
        cluster.finished_runs.add([self._key], [state.id for state in self._engines.values()
                                                if not state.dead and state.has_payload])
        cluster.prune_history(self._msg_ids)
        for state in self._engines.values():
            state.inflight.clear()


def _learn(state: _EngineState, info: EngineInfo | None) -> None:
    """Keep an engine's host, pid and job once the cluster knows them."""
    if info is not None and info.pid is not None:
        state.host, state.pid, state.job = info.host, info.pid, info.job


def _call(callback: Callable[[Run], Any], run: Run) -> None:
    """A done-callback's error is logged, as concurrent.futures does; the run is not hurt."""
    try:
        callback(run)
    except Exception:
        logging.getLogger(__name__).exception("a done-callback of %r raised", run)


def _outcomes_of(future: Any) -> tuple[list[Sequence[Any]], int]:
    """A returned batch's outcomes as columns (a tuple per Outcome field; none when the batch
    ran nothing), and the size of the bytes they came in."""
    try:
        raw = future.result(0)  # the returned bytes, or the error ipyparallel made of a failure
    except Exception as exc:
        raw = exc
    if isinstance(raw, ipp.error.RemoteError):  # a dead engine's too (ename "EngineError")
        raise _EngineFailure(raw.ename, raw.evalue)
    if isinstance(raw, ipp.error.TaskAborted):
        raise _EngineFailure("TaskAborted", "the run was cancelled before this batch ran")
    if isinstance(raw, BaseException):
        raise _EngineFailure(type(raw).__name__, str(raw))
    try:
        return pickle.loads(raw), len(raw)
    except Exception as exc:
        raise _EngineFailure(type(exc).__name__,
                             f"results could not be read on the client: {exc}") from None


def _pickle_payload(fn: Callable, validate: Any, shared: list[SharedValue] | None) -> bytes:
    """The task function and validator, pickled once; process-local state they capture (an
    open file, a lock, a connection) is refused, naming the captured name. With `shared` (a
    list to fill), big values stay out: they go to the store, once per host."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    label = getattr(fn, "__qualname__", type(fn).__name__)
    captured = _captured(fn)
    share = None if shared is None else _sharer(shared, captured)
    try:
        return dumps((fn, validate), share)
    except Exception as exc:
        culprits = unpicklable(captured)
        if culprits:
            problems = "; ".join(refusal(name, f"captured by {label}", error)
                                 for name, error in culprits.items())
        else:
            culprits = unpicklable({"validate": validate, label: fn})
            problems = "; ".join(refusal(name, "the task function" if name == label
                                         else "the validator", error)
                                 for name, error in culprits.items()) or str(exc)
        raise TypeError(f"cannot send to the engines: {problems}. Create it inside the "
                        "function instead (open the file, the connection or the lock "
                        "there)") from None


def _sharer(shared: list[SharedValue], captured: dict[str, Any]) -> Callable[[Any], str | None]:
    """The payload pickler's question for each value: share it (its fingerprint) or not."""
    names = {id(value): name for name, value in captured.items()}

    def share(value: Any) -> str | None:
        if not STORE.wants(value):
            return None
        name = names.get(id(value), type(value).__name__)
        entry = STORE.add(value, name)
        if not fits_in_shared_memory(entry.nbytes):
            warnings.warn(NoRoomToShare(
                f"`{name}` ({fmt.size(entry.nbytes)}) does not fit in {SHM_DIR}: it goes "
                "with the task to each engine instead (free some shared memory, or share "
                "less, to ship it once per host)"), stacklevel=6)
            return None
        if entry not in shared:
            shared.append(entry)
        return entry.digest

    return share


def warn_captured_streams(fn: Callable) -> None:
    """Warn of each random generator a `map` function captures: every engine would draw the
    same numbers from its copy."""
    label = getattr(fn, "__qualname__", type(fn).__name__)
    warn_same_streams({name: (value, f"captured by {label}")
                       for name, value in _captured(fn).items()}, "item")


def _captured(fn: Callable) -> dict[str, Any]:
    """The values a function reads from its closure and its module's globals."""
    try:
        found = inspect.getclosurevars(fn)
    except TypeError:  # a builtin, a callable object, a functools.partial
        return {}
    return {name: value for name, value in {**found.globals, **found.nonlocals}.items()
            if not isinstance(value, types.ModuleType)}
