"""One connected cluster: its client, its engines' facts, and (when this process started it)
the `ipp.Cluster` that adds, stops and replaces engines.

A local cluster is started with settings measured to come up in about 2 s on 2 cores
(DESIGN.md): no launcher delay, a 500 ms heartbeat, and no results database. Each local
engine is its own engine set, so a single engine can be stopped or replaced without touching
the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipyparallel as ipp
import psutil
from tornado.platform.asyncio import AsyncIOLoop

from .. import engine as engine_module
from ..errors import ClusterError
from ..store import SHM_DIR, SharedValue
from .autoscale import Autoscaler, Demand
from .files import cluster_files, new_cluster_id, prune_dead, remove_files
from .reaper import Reaper
from .transport import LOOPBACK, encryption_args
from .watch import ControllerWatch

CLIENT_HOST = socket.gethostname()
CLIENT_WRITER = -1
DROP_WAIT_S = 5.0
"""The writer of a shared value's file on the client's own host: the client itself."""
RECONNECT_GRACE_S = 1.0
"""A closed connection to the controller counts as its death once not made again this long
(libzmq retries every 0.1 s): a controller that went away, not a blip."""

# A 500 ms heartbeat: start-up near 2 s and dead engines noticed quickly. No results database:
# the controller would otherwise keep every result (measured: +200 MB over 20,000 10 kB results).
FAST_CONTROLLER_ARGS = ["--HeartMonitor.period=500", "--nodb"]
ENGINE_START_TIMEOUT = 60.0
# Run on each new engine: make `pp_notebook.engine` importable even where the package is not
# installed (an engine on another host), by loading this module's source text.
_BOOTSTRAP = """
import sys, types
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
    """One engine as the client knows it: id, where it runs, and its local engine set."""

    id: int
    host: str | None = None
    pid: int | None = None
    engine_set: str | None = None


class KernelCluster:
    """A connected ipyparallel client, plus the `ipp.Cluster` when this process started it."""

    def __init__(self, client: ipp.Client, cluster: ipp.Cluster | None = None,
                 cluster_id: str = "") -> None:
        self.client = client
        self.cluster = cluster
        self.cluster_id = cluster.cluster_id if cluster is not None else cluster_id
        self.engines: dict[int, EngineInfo] = {}
        self.retiring: set[int] = set()  # engines being stopped on purpose: runs send them nothing
        self._reaper: Reaper | None = None
        self.segment_prefix = f"pp_notebook-{self.cluster_id}"
        self._holdings: dict[str, dict[str, int]] = {}  # digest -> {host: engine that wrote it}
        self.autoscaler: Autoscaler | None = None
        if cluster is not None:
            self._reaper = Reaper()
            self._reaper.watch(cluster.controller.process.pid)
            self._reaper.remove(os.path.join(SHM_DIR, f"{self.segment_prefix}-*"))
            for pattern in cluster_files(cluster.profile_dir, self.cluster_id):
                self._reaper.remove(pattern)
        # The hub's query connection; ipyparallel offers no public handle on it.
        self._controller_watch = ControllerWatch(client._query_socket)
        self._pending_info: dict[int, Any] = {}
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
        """Engines that take work: registered, and not being stopped."""
        return [e for e in self.client.ids if e not in self.retiring]

    def controller_death(self) -> str | None:
        """What became of the cluster's controller, once it is gone; else None. Cheap: a
        process check for the controller this process started, a look at the connection's
        monitor for any (a cluster joined with `connect` too)."""
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

    def refresh(self) -> dict[int, EngineInfo]:
        """Set up engines that joined since the last call, forget those that left."""
        with self._lock:
            live = set(self.client.ids)
            for eid in live - set(self.engines):
                self.engines[eid] = EngineInfo(eid)
                self._setup(eid)
            for eid in set(self.engines) - live:
                del self.engines[eid]
                self._pending_info.pop(eid, None)
                self._lost_writer(eid)
            for eid, ar in list(self._pending_info.items()):
                if ar.done():
                    del self._pending_info[eid]
                    if ar.successful():
                        self._record_info(self.engines[eid], ar.get())
            return dict(self.engines)

    def _setup(self, eid: int) -> None:
        view = self.client[eid]
        view.execute(_BOOTSTRAP.format(source=Path(engine_module.__file__).read_text()))
        view.use_cloudpickle()
        self._pending_info[eid] = view.apply_async(engine_module.engine_info,
                                                   self.segment_prefix)

    def _record_info(self, info: EngineInfo, facts: dict) -> None:
        info.host, info.pid = facts["host"], facts["pid"]
        if self.cluster is not None:
            for set_id, engine_set in self.cluster.engines.items():
                if any(_launcher_pid(one) == info.pid for one in _launchers(engine_set)):
                    info.engine_set = set_id

    def wait_for_info(self, timeout: float = 10.0) -> None:
        """Block until every live engine has reported its host and pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.refresh()
            if not self._pending_info:
                return
            time.sleep(0.01)

    # -- changing the engines (local clusters only) -------------------------------------

    def add_engines(self, n: int, wait: bool = True) -> None:
        """Start `n` more local engines, each its own engine set."""
        cluster = self._require_owned("add engines")
        target = len(self.live_ids()) + n
        with self._lock:
            for _ in range(n):
                set_id = _on_cluster_loop(cluster.start_engines(n=1))
                for launcher in _launchers(cluster.engines[set_id]):
                    self._watch(_launcher_pid(launcher))
        if wait:
            self._wait_for_engines(target)

    def _wait_for_engines(self, target: int) -> None:
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while len(self.live_ids()) < target:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"only {len(self.live_ids())} of {target} engines registered within "
                    f"{ENGINE_START_TIMEOUT:g} s.\n{_log_tail(self.cluster)}")
            time.sleep(0.02)
        self.wait_for_info()

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

    def kill_engine(self, eid: int) -> None:
        """End an engine that does not respond (its task ignores interrupts)."""
        info = self.engines.get(eid)
        if self.owned and info is not None and info.pid is not None:
            try:
                os.kill(info.pid, signal.SIGKILL)
                return
            except ProcessLookupError:
                return
        # An engine elsewhere: ask its nanny, which runs beside it.
        self.client.send_signal(signal.SIGKILL, targets=[eid], block=False)

    def published(self, future: Any) -> dict:
        """What the engine published (ipyparallel data messages) while it ran the request
        behind `future`, as it has reached the client so far; works even when the engine died
        before replying."""
        msg_ids = getattr(future, "msg_ids", None) or []
        if not msg_ids or msg_ids[0] not in self.client.metadata:
            return {}
        return dict(self.client.metadata[msg_ids[0]]["data"])

    def interrupt_engine(self, eid: int) -> None:
        """Raise KeyboardInterrupt in the task an engine is running."""
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
                _on_cluster_loop(_remove_leftovers(self.cluster.profile_dir, self.cluster_id))
                if self._reaper is not None:
                    self._reaper.close()


def _launchers(engine_set: Any) -> list:
    return list(getattr(engine_set, "launchers", {}).values())


def _launcher_pid(launcher: Any) -> int | None:
    process = getattr(launcher, "process", None)
    return getattr(process, "pid", None)


def start_local(n: int) -> KernelCluster:
    """A new local cluster of `n` engines on loopback, watched by a reaper."""
    # shutdown_atexit=False: ipyparallel's own exit hook (and __del__) would stop it on a
    # fresh loop, beside the cluster loop; `_stop_at_exit` and the Reaper stop it instead.
    cluster = ipp.Cluster(n=0, delay=0,
                          controller_args=[*FAST_CONTROLLER_ARGS, *encryption_args(LOOPBACK)],
                          cluster_id=new_cluster_id(),
                          controller_ip=LOOPBACK, log_level=logging.ERROR,
                          shutdown_atexit=False)
    try:
        _on_cluster_loop(cluster.start_controller())
        handle = KernelCluster(_on_cluster_loop(cluster.connect_client()), cluster)
        handle.add_engines(n)
    except Exception as exc:
        tail = _log_tail(cluster)
        _quiet_stop(cluster)
        if isinstance(exc, ClusterError):
            raise
        raise ClusterError(f"the local cluster did not start: {exc}\n{tail}") from None
    return handle


def _log_tail(cluster: ipp.Cluster, lines: int = 20) -> str:
    """The last lines the controller and engines printed: why a start failed."""
    parts = []
    launchers = [("controller", cluster.controller),
                 *[(f"engines {k}", v) for k, v in cluster.engines.items()]]
    for name, launcher in launchers:
        try:
            text = launcher.get_output() if launcher is not None else ""
        except Exception:
            continue
        if text.strip():
            parts.append(f"--- {name} log (last lines) ---\n"
                         + "\n".join(text.strip().splitlines()[-lines:]))
    return "\n".join(parts)


async def _remove_leftovers(profile_dir: str, cluster_id: str) -> None:
    """Remove what ipyparallel leaves of a stopped cluster (its engine-state file, at least),
    and of this toolkit's earlier clusters whose kernels are gone. A coroutine, run on the
    cluster loop: ipyparallel removes a stopped process's log there too, and two removers
    at once make it print "Failed to remove" (see `_on_cluster_loop`)."""
    remove_files(cluster_files(profile_dir, cluster_id))
    prune_dead(profile_dir)


def _quiet_stop(cluster: ipp.Cluster) -> None:
    try:
        _on_cluster_loop(cluster.stop_cluster())
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


