"""One connected cluster: its client, its engines' facts, and (when this process started it)
the `ipp.Cluster` that adds, stops and replaces engines.

A cluster is started with settings measured to come up fast on 2 cores
(benchmarks/bench_core.py): local engines launched beside the controller (they wait for its
connection file), no launcher delay, a short heartbeat, and no results database. Each
engine is its own engine set (with a scheduler, its own job), so a single engine can be
stopped or replaced without touching the others. An engine set whose engine does not
register within the cluster's deadline (a job left pending) is given up: stopped, logged
and listed as not granted, never waited for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipyparallel as ipp
import psutil
from ipyparallel.client.futures import MessageFuture
from ipyparallel.cluster.launcher import LocalControllerLauncher
from ipyparallel.serialize import use_cloudpickle
from tornado.platform.asyncio import AsyncIOLoop

from .. import engine as engine_module
from ..errors import ClusterError
from ..snapshot import NotGranted
from ..store import SHM_DIR, SharedValue
from .autoscale import Autoscaler, Demand
from .files import cluster_files, new_cluster_id, prune_dead, remove_files
from .finished_runs import FinishedRuns
from .launchers import LAUNCHERS, Launcher, job_state
from .reaper import Reaper, cancel_jobs
from .transport import controller_address, encryption_args
from .watch import ControllerWatch

CONTROLLER_CMD = [sys.executable, "-m", "pp_notebook.controller_app"]
"""ipyparallel's controller, less a fixed pause in its set-up (pp_notebook/controller_app.py)."""
CLIENT_HOST = socket.gethostname()
CLIENT_WRITER = -1
"""The writer of a shared value's file on the client's own host: the client itself."""
DROP_WAIT_S = 5.0
"""How long dropping shared values waits for the engines (a busy one drops them when it
gets to it)."""
FORGET_WAIT_S = 1.0
"""Before disconnecting from a cluster, how long its engines may take to drop finished runs'
functions (the requests must leave before the client's sockets close)."""
RECONNECT_GRACE_S = 1.0
"""A closed connection to the controller counts as its death once not made again this long
(libzmq retries every 0.1 s): a controller that went away, not a blip."""

HEARTBEAT_MS_PER_ENGINE, HEARTBEAT_MS_RANGE = 10, (50, 500)
SILENT_HOST_S = 5.0
"""A host whose engines' hearts have not answered for this long is dead (any period)."""
REGISTER_TIMEOUT_S = 120.0
"""How long an engine may take to register (with a scheduler: its job to be granted and
start) before it is given up."""
NOT_GRANTED_KEPT = 10
log = logging.getLogger("pp_notebook")
# Run on each new engine: make `pp_notebook.engine` importable even where the package is not
# installed (an engine on another host), by loading this module's source text; and serialize
# with cloudpickle, as View.use_cloudpickle() has an engine do (in a request of its own).
_BOOTSTRAP = """
import sys, types
from ipyparallel.serialize import use_cloudpickle
use_cloudpickle()
try:
    import pp_notebook.engine
except ImportError:
    _pkg = sys.modules.setdefault("pp_notebook", types.ModuleType("pp_notebook"))
    _pkg.__path__ = []
    _mod = types.ModuleType("pp_notebook.engine")
    exec(compile({source!r}, "pp_notebook/engine.py", "exec"), _mod.__dict__)
    sys.modules["pp_notebook.engine"] = _pkg.engine = _mod
"""


@dataclass
class EngineInfo:
    """One engine as the client knows it: id, where it runs, its scheduler job (if any) and
    the engine set that started it."""

    id: int
    host: str | None = None
    pid: int | None = None
    engine_set: str | None = None
    job: str | None = None


@dataclass(frozen=True)
class _Waiting:
    """An engine set started and not yet registered: since when, and its scheduler job
    (and whether it has been seen running: then its engine is only slow to register)."""

    since: float
    job: str | None
    running: bool = False


class KernelCluster:
    """A connected ipyparallel client, plus the `ipp.Cluster` when this process started it.

    `client` None: connect to `cluster`, whose controller has just been started, once its
    first `engines` engine sets are launched; local engines then start beside the controller
    (they wait for its connection file) instead of after it.
    """

    def __init__(self, client: ipp.Client | None, cluster: ipp.Cluster | None = None,
                 cluster_id: str = "", launcher: Launcher = LAUNCHERS["local"],
                 launcher_options: Mapping[str, Any] | None = None,
                 register_timeout: float = REGISTER_TIMEOUT_S, engines: int = 0) -> None:
        self.cluster = cluster
        self.launcher = launcher
        self.launcher_options = dict(launcher_options or {})
        self.register_timeout = register_timeout
        self.not_granted: deque[NotGranted] = deque(maxlen=NOT_GRANTED_KEPT)
        self.jobs: set[str] = set()  # every scheduler job submitted: none outlives the cluster
        self._waiting: dict[str, _Waiting] = {}  # engine set id -> started, not registered
        self._sets_started = 0
        self.cluster_id = cluster.cluster_id if cluster is not None else cluster_id
        self.engines: dict[int, EngineInfo] = {}
        self.retiring: set[int] = set()  # engines being stopped on purpose: runs send them nothing
        self._ended: set[int] = set()  # killed here or their process ended: gone, even
        # before the controller knows
        self._idents: dict[int, bytes] = {}  # kept: a batch may go to one that just left
        self._reaper: Reaper | None = None
        self.segment_prefix = f"pp_notebook-{self.cluster_id}"
        self._holdings: dict[str, dict[str, int]] = {}  # digest -> {host: engine that wrote it}
        self.autoscaler: Autoscaler | None = None
        self.stopped = False  # shut down: a run still going ends, and no engine is started
        try:
            if cluster is not None:
                self._reaper = Reaper()
                self._reaper.watch(cluster.controller.process.pid)
                self._reaper.remove(os.path.join(SHM_DIR, f"{self.segment_prefix}-*"))
                for pattern in cluster_files(cluster.profile_dir, self.cluster_id):
                    self._reaper.remove(pattern)
                for _ in range(engines):
                    self._start_engine_set(cluster)
            if client is None:
                client = _on_cluster_loop(self._require_owned("connect").connect_client())
        except BaseException:  # no handle to shut down: the reaper ends what was started
            if self._reaper is not None:
                self._reaper.close()
            raise
        self.client = client
        # The hub's query connection; ipyparallel offers no public handle on it.
        self._controller_watch = ControllerWatch(client._query_socket)
        self._pending_info: dict[int, Any] = {}
        self._history_lock = threading.Lock()
        self.finished_runs = FinishedRuns(self._forget_runs)
        self._demand_source: Callable[[], Demand] | None = None
        self._lock = threading.RLock()
        self.refresh()

    @property
    def controller_pid(self) -> int | None:
        """The pid of the controller this process started (None for a connected cluster)."""
        process = getattr(self.cluster.controller, "process", None) if self.cluster else None
        return getattr(process, "pid", None)

    @property
    def profile_dir(self) -> str | None:
        """The IPython profile folder of a cluster this process started (its security and
        log folders are in it)."""
        return self.cluster.profile_dir if self.cluster is not None else None

    @property
    def owned(self) -> bool:
        """True when this process started the cluster (and may add or stop engines)."""
        return self.cluster is not None

    def follow(self, source: Callable[[], Demand]) -> None:
        """Hand the autoscaler the demand of the work now running (a Run, while it runs)."""
        self._demand_source = source

    def unfollow(self, source: Callable[[], Demand]) -> None:
        """The work behind `source` has ended: no demand from it any more."""
        if self._demand_source is source:
            self._demand_source = None

    def demand(self) -> Demand | None:
        """The running work's demand, or None when nothing runs."""
        source = self._demand_source
        return source() if source is not None else None

    def live_ids(self) -> list[int]:
        """Engines that take work: registered, and not being stopped or killed."""
        return [e for e in self.client.ids if e not in self.retiring and e not in self._ended]

    def ended(self, eid: int) -> bool:
        """Whether engine `eid` is gone as far as this process can tell: its process ended,
        or was killed from here (the controller may list it for seconds more)."""
        return eid in self._ended

    def controller_death(self) -> str | None:
        """What became of the cluster's controller, once it is gone; else None. Cheap: a
        process check for the controller this process started, a look at the connection's
        monitor for any (a cluster joined with `connect` too). A cluster shut down from here
        is gone too."""
        if self.stopped:
            return "the cluster was stopped (pp_notebook.stop())" if self.owned else \
                f"the connection to cluster {self.cluster_id!r} was closed"
        process = getattr(self.cluster.controller, "process", None) if self.cluster else None
        if process is not None:
            try:
                gone = not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                gone = True
            if gone:
                return f"the cluster's controller (pid {process.pid}) stopped"
        lost = self._controller_watch.lost_for()
        if lost is not None and lost >= RECONNECT_GRACE_S:
            where = self._controller_watch.endpoint
            return (f"the controller of cluster {self.cluster_id!r} ({where}) went away: its "
                    f"connection closed {lost:.1f} s ago and was not made again")
        return None

    def waiting(self) -> int:
        """Engines started (jobs submitted) that have not registered yet."""
        return len(self._waiting)

    def refresh(self) -> dict[int, EngineInfo]:
        """Set up engines that joined since the last call, forget those that left, and give
        up engine sets that did not register within the deadline."""
        with self._lock:
            live = set(self.client.ids)
            for eid in live - set(self.engines):
                self.engines[eid] = EngineInfo(eid)
                self._idents[eid] = self.client._engines[eid].encode()
                self._setup(eid)
            for eid in list(self._pending_info):  # before the dead leave (see facts)
                self.facts(eid)
            for eid in set(self.engines) - live:
                del self.engines[eid]
                self._pending_info.pop(eid, None)
                self._lost_writer(eid)
            self._mark_ended([eid for eid, info in self.engines.items()
                              if self._process_ended(info)])
            now = time.monotonic()
            for set_id, waiting in list(self._waiting.items()):
                engine_set = self._require_owned("start engines").engines.get(set_id)
                if engine_set is None:  # stopped with the cluster: nothing to wait for
                    del self._waiting[set_id]
                    continue
                exited = getattr(engine_set, "state", None) == "after"  # its process ended
                if exited or now - waiting.since > self.register_timeout:
                    self._deadline(set_id, waiting, now, exited)
            return {eid: info for eid, info in self.engines.items() if eid not in self._ended}

    def _mark_ended(self, eids: list[int]) -> None:
        """Engines known gone take no more work, and the controller is told at once, as a
        nanny would (it would otherwise hear of it when their hearts stop, seconds later; its
        notice ends their unanswered requests for every client)."""
        client = self.client
        for eid in set(eids) - self._ended:
            self._ended.add(eid)
            client._io_loop.add_callback(client.session.send, client._query_stream,
                                         "unregistration_request", content={"id": eid})

    def _process_ended(self, info: EngineInfo) -> bool:
        """Whether the engine set that started this engine is over: its process ended (seen by
        ipyparallel's launcher, a tenth of a second at most) or was stopped from here. The
        controller hears of it only when its heart stops, seconds later, without a nanny."""
        if self.cluster is None or info.engine_set is None:
            return False
        engine_set = self.cluster.engines.get(info.engine_set)
        return engine_set is None or getattr(engine_set, "state", None) == "after"

    def facts(self, eid: int, wait: float = 0.0) -> EngineInfo | None:
        """Engine `eid` as known now, its host and pid read from its set-up reply if that has
        come (waiting up to `wait` seconds for it): an engine that dies just after answering
        is still named."""
        with self._lock:
            reply = self._pending_info.get(eid)
            if reply is not None and wait:
                reply.wait(wait)
            if reply is not None and reply.done():
                del self._pending_info[eid]
                if reply.successful():
                    self._record_info(self.engines[eid], reply.get())
            return self.engines.get(eid)

    def answered(self, eid: int) -> bool:
        """Whether engine `eid` has answered its set-up, so that its host and pid are known
        (unless the set-up failed there)."""
        self.facts(eid)
        return eid not in self._pending_info

    def _setup(self, eid: int) -> None:
        view = self.client[eid]
        use_cloudpickle()  # here, as on the engine (_BOOTSTRAP)
        view.execute(_BOOTSTRAP.format(source=Path(engine_module.__file__).read_text()))
        self._pending_info[eid] = view.apply_async(engine_module.engine_info,
                                                   self.segment_prefix)

    def _record_info(self, info: EngineInfo, facts: dict) -> None:
        info.host, info.pid, info.job = facts["host"], facts["pid"], facts.get("job")
        info.engine_set = self._set_of(info)
        if info.engine_set is not None:
            waiting = self._waiting.pop(info.engine_set)
            info.job = info.job or waiting.job

    def _set_of(self, info: EngineInfo) -> str | None:
        """The waiting engine set that started this engine: by job, by process (the engine or
        its parent, mpiexec), else the oldest one waiting (ssh: a remote process)."""
        if self.cluster is None or not self._waiting:
            return None
        parents: set[int | None] = {info.pid}
        if info.host == CLIENT_HOST:
            try:
                parents |= {p.pid for p in psutil.Process(info.pid).parents()}
            except psutil.Error:
                pass
        for set_id, waiting in self._waiting.items():
            if (info.job is not None and waiting.job == info.job) or parents & {
                    _launcher_pid(one) for one in _launchers(self.cluster.engines[set_id])}:
                return set_id
        return None if self.launcher.scheduler or self.launcher.local else next(
            iter(self._waiting))

    def _deadline(self, set_id: str, waiting: _Waiting, now: float, exited: bool) -> None:
        """An engine set's deadline has passed (or its process ended): a job the scheduler
        has just started gets the deadline once more, to register; any other is given up:
        stopped, and why said."""
        state = job_state(waiting.job) if waiting.job is not None else ""
        if state.startswith("RUNNING") and not waiting.running:
            self._waiting[set_id] = _Waiting(now, waiting.job, running=True)
            return
        del self._waiting[set_id]
        waited = now - waiting.since
        if waiting.job is not None and not waiting.running:
            reason = f"job {waiting.job} was not granted within {waited:.0f} s ({state}): " \
                     "cancelled"
        else:
            where = f"job {waiting.job} ran, but its engine" if waiting.job else "an engine"
            reason = f"{where} exited without registering" if exited else \
                f"{where} did not register within {waited:.0f} s: stopped"
        cluster = self._require_owned("stop engines")
        said = _last_error(_output_tail(cluster.engines[set_id], 40))
        reason += f"; it said: {said}" if said else ""
        try:
            _on_cluster_loop(cluster.stop_engines(set_id))
        except Exception as exc:
            reason += f" (stopping it failed: {exc})"
        self._refused(waiting.job, reason, waited)

    def _refused(self, job: str | None, reason: str, waited: float) -> None:
        log.warning("pp_notebook: %s", reason)
        self.not_granted.append(NotGranted(job, reason, waited))

    def wait_for_info(self, timeout: float = 10.0) -> None:
        """Block until every live engine has reported its host and pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.refresh()
            if not self._pending_info:
                return
            time.sleep(0.01)

    # -- changing the engines (clusters this process started) -----------------------------

    def add_engines(self, n: int, wait: bool = True) -> None:
        """Start `n` more engines through the cluster's launcher, each its own engine set
        (a job each, with a scheduler); with `wait`, until each registered or was given up.
        One that cannot be started (a job the scheduler refuses) is listed as not granted."""
        cluster = self._require_owned("add engines")
        with self._lock:
            for _ in range(n):
                self._start_engine_set(cluster)
        if wait:
            self.wait_for_engines()

    def _start_engine_set(self, cluster: ipp.Cluster) -> None:
        if self.stopped:  # its engine would wait for a connection file that never comes
            raise ClusterError("the cluster was stopped: pp_notebook.start() starts a new one")
        folder = os.path.join(cluster.profile_dir, "log", f"ipengine-{self.cluster_id}")
        kwargs = self.launcher.engine_set_kwargs(self.launcher_options, self._sets_started,
                                                 folder, self.register_timeout)
        self._sets_started += 1
        before = set(cluster.engines)
        try:
            set_id = _on_cluster_loop(cluster.start_engines(n=1, **kwargs))
        except Exception as exc:  # sbatch refused the job, mpiexec is missing, ...
            for failed in set(cluster.engines) - before:
                cluster.engines.pop(failed)
            self._refused(None, f"the {self.launcher.name} launcher could not start an "
                                f"engine: {str(exc).strip()}", 0.0)
            return
        job = getattr(cluster.engines[set_id], "job_id", None) or None
        self._waiting[set_id] = _Waiting(time.monotonic(), job)
        if job is not None:
            self.jobs.add(job)
            if self._reaper is not None:
                self._reaper.cancel(job)
        for launcher in _launchers(cluster.engines[set_id]):
            self._watch(_launcher_pid(launcher))

    def wait_for_engines(self) -> None:
        """Wait until every engine set started has registered or been given up."""
        self.refresh()
        while self._waiting:  # refresh() registers an engine set, or gives it up
            time.sleep(0.02)
            self.refresh()
        self.wait_for_info()
        if not self.live_ids():
            reasons = "\n".join(n.reason for n in self.not_granted)
            raise ClusterError(f"no engine registered:\n{reasons}\n{_log_tail(self.cluster)}"
                               .rstrip())

    def retire(self, eid: int) -> None:
        """Stop one local engine once it has no task: runs send it nothing from now on."""
        self.retiring.add(eid)  # kept: engine ids are never reused
        quiet = 0
        while quiet < 2 and eid in self.client.ids:
            time.sleep(0.1)  # a run's dispatch that read the set just before may still send
            load = self.client.queue_status(targets=[eid]).get(eid, {})
            quiet = quiet + 1 if load.get("queue", 0) + load.get("tasks", 0) == 0 else 0
        if eid in self.client.ids:
            self.stop_engine(eid)

    def stop_engine(self, eid: int) -> None:
        """Stop one local engine (scale down, or clean up after a kill)."""
        cluster = self._require_owned("stop engines")
        self.refresh()
        info = self.engines.get(eid)
        if info is None or info.engine_set is None:
            raise ClusterError(f"engine {eid} is not one this process started")
        with self._lock:
            _on_cluster_loop(cluster.stop_engines(info.engine_set))

    def kill_engine(self, eid: int, pid: int | None = None, host: str | None = None) -> None:
        """End an engine that does not respond (its task ignores interrupts). `pid` and
        `host`: the engine's as a run knew them, for one the controller has given up already
        (a frozen engine's heart stops too) and this handle may have forgotten."""
        info = self.engines.get(eid)
        if info is not None and info.pid is not None:
            pid, host = info.pid, info.host
        if self._signal_here(pid, host, signal.SIGKILL):
            self._mark_ended([eid])  # a run that waits for its replacement must not count it
        elif eid in self.client.ids:  # an engine elsewhere: ask its nanny, beside it
            self.client.send_signal(signal.SIGKILL, targets=[eid], block=False)

    def _signal_here(self, pid: int | None, host: str | None, sig: int) -> bool:
        """Signal an engine this process started on this host itself (a local engine has no
        nanny to relay it); False for one elsewhere, or not known here."""
        if not (self.owned and pid is not None and host == CLIENT_HOST):
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        return True

    def send_batch(self, eid: int, fn: Any, args: list) -> MessageFuture:
        """Call `fn(*args)` on engine `eid`, as a DirectView's apply_async does but without its
        per-call bookkeeping (views' histories, an AsyncResult: half the client's cost of a
        call). The future's result is the returned value, or the error ipyparallel made of a
        failure (a RemoteError, TaskAborted)."""
        client = self.client
        return client.send_apply_request(client._mux_stream, fn, args, ident=self._idents[eid])

    def _forget_runs(self, keys_by_engine: dict[int, list[str]]) -> list[MessageFuture]:
        """Ask each live engine to drop finished runs' functions (finished_runs.py); returns
        the requests' futures. They leave no trace in the client's history."""
        futures: list[MessageFuture] = []
        try:
            live = set(self.live_ids())
            for eid, keys in keys_by_engine.items():
                if eid in live:
                    futures.append(self.send_batch(eid, engine_module.forget, [keys]))
        except Exception:  # the client closed meanwhile: nothing left to clean
            pass
        self.prune_history({future.msg_id for future in futures})
        return futures

    def prune_history(self, msg_ids: set[str]) -> None:
        """Drop requests from the client's history (it would keep every one of every run)."""
        with self._history_lock:  # two of ours at once could put back what the other took
            history = self.client.history
            history[:] = [m for m in history if m not in msg_ids]

    def published(self, future: Any) -> dict:
        """What the engine published (ipyparallel data messages) while it ran the request
        behind `future`, as it has reached the client so far; works even when the engine died
        before replying."""
        msg_id = getattr(future, "msg_id", None)
        if msg_id not in self.client.metadata:
            return {}
        return dict(self.client.metadata[msg_id]["data"])

    def interrupt_engine(self, eid: int) -> None:
        """Raise KeyboardInterrupt in the task an engine is running: signalled from here for
        one this process started on this host, else by its nanny, beside it."""
        info = self.facts(eid)
        if info is None or not self._signal_here(info.pid, info.host, signal.SIGINT):
            self.client.send_signal(signal.SIGINT, targets=[eid], block=False)

    def scale(self, n: int) -> None:
        """Grow or shrink a local cluster to `n` engines; engines leave once their task ends."""
        self._require_owned("scale")
        self.adapt(None)
        current = self.live_ids()
        if n > len(current):
            self.add_engines(n - len(current))
            return
        queues = self.client.queue_status()
        by_load = sorted(current, key=lambda e: (queues.get(e, {}).get("queue", 0)
                                                 + queues.get(e, {}).get("tasks", 0), -e))
        for eid in by_load[: len(current) - n]:
            self.retire(eid)
        deadline = time.monotonic() + 10
        while len(self.client.ids) > n and time.monotonic() < deadline:  # retired ones left
            time.sleep(0.02)

    def adapt(self, limits: tuple[int, int, float] | None) -> None:
        """Follow the work between (min_engines, max_engines, idle_timeout); None: fixed."""
        if self.autoscaler is not None:
            self.autoscaler.stop()
            self.autoscaler = None
        if limits is not None:
            self._require_owned("adapt the engine count")
            self.autoscaler = Autoscaler(self, *limits, demand=self.demand)

    def _require_owned(self, what: str) -> ipp.Cluster:
        """The `ipp.Cluster` that `what` needs: only a cluster this process started has one."""
        if self.cluster is None:
            raise ClusterError(
                f"cannot {what}: this cluster was started elsewhere (pp_notebook.connect). "
                "Change its engines with the tool that started it, e.g. `ipcluster engines`.")
        return self.cluster

    def _watch(self, pid: int | None) -> None:
        """Have the reaper end `pid` with this process (only a cluster it started has one)."""
        if self._reaper is not None and pid is not None:
            self._reaper.watch(pid)

    # -- shared values: one file per host --------------------------------------------------

    def share(self, value: SharedValue, eid: int) -> float | None:
        """Make sure engine `eid`'s host holds `value`, writing it there through that engine
        if not; returns the seconds it took, or None when the host had it already."""
        self.wait_for_info()
        host = self.engines[eid].host if eid in self.engines else None
        held = self._holdings.setdefault(value.digest, {})
        if host in held:
            return None
        started = time.perf_counter()
        segment = f"{self.segment_prefix}-{value.digest}"
        buffers = [buffer.raw() for buffer in value.buffers]
        if host == CLIENT_HOST:  # this host: write the file here, nothing crosses a socket
            engine_module.write_segment(segment, value.inband, buffers, remove_at_exit=False)
            held[host] = CLIENT_WRITER
        else:
            self.client[eid].apply_sync(engine_module.write_segment, segment, value.inband,
                                        buffers, True)
            if host is not None:
                held[host] = eid
        return time.perf_counter() - started

    def holds(self, value: SharedValue) -> int:
        """On how many hosts `value` is now."""
        return len(self._holdings.get(value.digest, {}))

    def drop_shared(self, digests: list[str], engines_too: bool = True) -> None:
        """Remove shared values (by fingerprint) from the hosts' /dev/shm and, with
        `engines_too`, from every engine's cache (waiting at most DROP_WAIT_S for busy ones:
        they drop them when they get to it)."""
        segments = [f"{self.segment_prefix}-{digest}" for digest in digests
                    if self._holdings.pop(digest, None) is not None]
        if not segments:
            return
        live = self.live_ids() if engines_too else []
        if live:
            try:
                done = self.client[live].apply_async(engine_module.drop_segments, segments, True)
                done.wait(DROP_WAIT_S)
            except Exception:  # engines gone: the files on this host are removed below
                pass
        for segment in segments:
            try:
                os.unlink(os.path.join(SHM_DIR, segment))
            except FileNotFoundError:
                pass

    def _lost_writer(self, eid: int) -> None:
        """An engine left: a file it wrote on another host went with it (it removes those when
        it stops), so that host must be sent the value again."""
        for held in self._holdings.values():
            for host, writer in list(held.items()):
                if writer == eid and host != CLIENT_HOST:
                    del held[host]

    def shutdown(self) -> None:
        """Stop a local cluster's engines and controller; disconnect from a foreign one. The
        shared values leave the hosts either way."""
        with self._lock:  # an engine set being started finishes first, and is stopped below
            self.stopped = True
        if self.cluster is None:  # a connected cluster's engines stay: leave them clean
            futures_wait(self.finished_runs.flush(), FORGET_WAIT_S)
        self.finished_runs.close()
        # A local cluster's engines stop now (those elsewhere remove their files as they
        # stop): only this host's files are left to remove. A connected one's engines stay.
        self.drop_shared(list(self._holdings), engines_too=self.cluster is None)
        self._controller_watch.close()
        try:
            self.client.close()
        except Exception:
            pass
        if self.cluster is not None:
            self.adapt(None)
            with self._lock:
                _quiet_stop(self.cluster)
                if self.jobs:  # jobs whose engine set did not stop (one ended already)
                    jobs = sorted(self.jobs)
                    if not cancel_jobs(jobs):
                        log.warning("pp_notebook: could not cancel the Slurm jobs %s",
                                    " ".join(jobs))
                _on_cluster_loop(_remove_leftovers(self.cluster.profile_dir, self.cluster_id))
                if self._reaper is not None:
                    self._reaper.close()


def _launchers(engine_set: Any) -> list:
    return list(getattr(engine_set, "launchers", {}).values())


def _launcher_pid(launcher: Any) -> int | None:
    process = getattr(launcher, "process", None)
    return getattr(process, "pid", None)


def controller_args(engines: int) -> list[str]:
    """The controller's settings for a cluster started with `engines` engines.

    The controller takes in a new engine on the first heartbeat after the engine's heart
    answers (up to two periods: a 500 ms period cost 0.8 s of start-up), but it also handles
    every engine's answer to every beat. So it beats every 10 ms per engine, between 50 and
    500 ms, and a host silent for 5 s is dead whatever the period. No results database: the
    controller would otherwise keep every result (+200 MB over 20,000 10 kB results).
    """
    low, high = HEARTBEAT_MS_RANGE
    period = min(high, max(low, HEARTBEAT_MS_PER_ENGINE * engines))
    return [f"--HeartMonitor.period={period}",
            f"--HeartMonitor.max_heartmonitor_misses={round(1000 * SILENT_HOST_S / period)}",
            "--nodb"]


def start_cluster(n: int, launcher: Launcher = LAUNCHERS["local"],
                  options: Mapping[str, Any] | None = None, *,
                  controller_ip: str | None = None, encrypt: bool | None = None,
                  register_timeout: float = REGISTER_TIMEOUT_S,
                  most_engines: int | None = None) -> KernelCluster:
    """A new cluster of `n` engines started by `launcher`, watched by a reaper. Its
    heartbeat is sized for `most_engines` (default `n`), the most it is meant to grow to.

    A local cluster listens on loopback unless told otherwise; one whose engines run on other
    hosts listens on `controller_ip` (default: the address of this host's name), with
    CurveZMQ on beyond loopback unless `encrypt=False` (transport.py).
    """
    if controller_ip is None and not launcher.local:
        controller_ip = socket.gethostname()
    address = controller_address(controller_ip)
    # shutdown_atexit=False: ipyparallel's own exit hook (and __del__) would stop it on a
    # fresh loop, beside the cluster loop; `_stop_at_exit` and the Reaper stop it instead.
    # Local engines are launched at once and read the connection file as it appears; others
    # are handed the connection in their environment once the controller has written it.
    cluster = ipp.Cluster(n=0, delay=0, engine_launcher_class=launcher.ipp_class,
                          send_engines_connection_env=not launcher.local,
                          controller_args=[*controller_args(max(n, most_engines or n)),
                                           *encryption_args(address, encrypt)],
                          cluster_id=new_cluster_id(),
                          controller_ip=address, log_level=logging.ERROR,
                          shutdown_atexit=False)
    handle = None
    try:
        # ipyparallel's controller less its pause, where it runs here (a profile may have
        # configured another controller launcher: it keeps its own command)
        launcher_class = cluster.controller_launcher_class
        quick = isinstance(launcher_class, type) \
            and issubclass(launcher_class, LocalControllerLauncher)
        _on_cluster_loop(cluster.start_controller(
            **({"controller_cmd": CONTROLLER_CMD} if quick else {})))
        handle = KernelCluster(None, cluster, launcher=launcher, launcher_options=options,
                               register_timeout=register_timeout, engines=n)
        handle.wait_for_engines()
    except Exception as exc:
        tail = _log_tail(cluster)
        if handle is not None:
            handle.shutdown()
        else:
            _quiet_stop(cluster)
        if isinstance(exc, ClusterError):
            raise
        raise ClusterError(f"the {launcher.name} cluster did not start: {exc}\n{tail}") \
            from None
    return handle


def _log_tail(cluster: ipp.Cluster, lines: int = 20) -> str:
    """The last lines the controller and engines printed: why a start failed."""
    parts = []
    launchers = [("controller", cluster.controller),
                 *[(f"engines {k}", v) for k, v in cluster.engines.items()]]
    for name, launcher in launchers:
        text = _output_tail(launcher, lines)
        if text:
            parts.append(f"--- {name} log (last lines) ---\n{text}")
    return "\n".join(parts)


async def _remove_leftovers(profile_dir: str, cluster_id: str) -> None:
    """Remove what ipyparallel leaves of a stopped cluster (its engine-state file, at least),
    and of this toolkit's earlier clusters whose kernels are gone. A coroutine, run on the
    cluster loop: ipyparallel removes a stopped process's log there too, and two removers
    at once make it print "Failed to remove" (see `_on_cluster_loop`)."""
    remove_files(cluster_files(profile_dir, cluster_id))
    prune_dead(profile_dir)


def _output_tail(launcher: Any, lines: int) -> str:
    """The last `lines` lines a launcher's process (or job) printed, or ""."""
    try:
        text = launcher.get_output(remove=False) if launcher is not None else ""
    except Exception:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _last_error(text: str) -> str:
    """The last line of `text` that names an error (a traceback's last), else its last that
    is not a warning (a local engine logs warnings only, and "Not using CurveZMQ security"
    says nothing of why it stopped)."""
    lines = [line.strip() for line in text.splitlines() if line.strip(" -")]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    said = [line for line in lines if "] WARNING |" not in line]
    return (errors or said or [""])[-1]


def _quiet_stop(cluster: ipp.Cluster) -> None:
    """Stop the controller and every engine set, each whatever the others do (a job that
    ended already makes `scancel` fail)."""
    async def stop_each() -> None:
        await asyncio.gather(cluster.stop_controller(),
                             *(cluster.stop_engines(one) for one in list(cluster.engines)),
                             return_exceptions=True)
    try:
        _on_cluster_loop(stop_each())
    except Exception:
        pass


# Every ipp.Cluster coroutine of this process runs on this one loop, in its own thread.
# A launcher hands its process's exit (notify_stop, which reads and removes the process's log
# file) to the loop it was started on, while ipyparallel's `*_sync` methods run where they are
# called from: on the Cluster's private thread if an event loop runs (a notebook cell), on a
# fresh loop in the calling thread if none does (the interpreter's exit, a run's or the
# autoscaler's thread). A cluster started in one way and stopped in the other had two threads
# remove one log file at once, and ipyparallel printed "Failed to remove …/ipcontroller-….log"
# (and could leave an engine set half stopped). On one loop, the two take turns.
_loop: AsyncIOLoop | None = None
_loop_lock = threading.Lock()


def _on_cluster_loop(coroutine: Any) -> Any:
    """Run an ipp.Cluster coroutine on the cluster loop; wait for and return its result."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = AsyncIOLoop(make_current=False)
            threading.Thread(target=_loop.start, name="pp_notebook-cluster-loop",
                             daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coroutine, _loop.asyncio_loop).result()


