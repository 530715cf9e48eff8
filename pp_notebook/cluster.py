"""The kernel's one ipyparallel cluster: start or connect on first use, scale, replace, stop.

A local cluster is started with settings measured to come up in about 2 s on 2 cores
(DESIGN.md): no launcher delay, a 500 ms heartbeat, and no results database. Each local
engine is its own engine set, so a single engine can be stopped or replaced without touching
the others.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipyparallel as ipp
import psutil
from tornado.ioloop import IOLoop

from . import engine as engine_module
from .autoscale import Autoscaler
from .reaper import Reaper

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


class ClusterError(RuntimeError):
    """The cluster could not be started, reached or changed; the message says what to do."""


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
        self.autoscaler: Autoscaler | None = None
        if cluster is not None:
            self._reaper = Reaper()
            self._reaper.watch(cluster.controller.process.pid)
        self._pending_info: dict[int, Any] = {}
        self._lock = threading.RLock()
        self.refresh()

    @property
    def owned(self) -> bool:
        """True when this process started the cluster (and may add or stop engines)."""
        return self.cluster is not None

    def live_ids(self) -> list[int]:
        """Engines that take work: registered, and not being stopped."""
        return [e for e in self.client.ids if e not in self.retiring]

    def controller_death(self) -> str | None:
        """What became of the controller this process started, once it is gone; else None."""
        process = getattr(self.cluster.controller, "process", None) if self.cluster else None
        if process is None:
            return None
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            pass
        return f"the cluster's controller (pid {process.pid}) stopped"

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
        self._pending_info[eid] = view.apply_async(engine_module.engine_info)

    def _record_info(self, info: EngineInfo, facts: dict) -> None:
        info.host, info.pid = facts["host"], facts["pid"]
        if self.cluster is not None:
            for set_id, engine_set in self.cluster.engines.items():
                if any(_launcher_pid(l) == info.pid for l in _launchers(engine_set)):
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
        self._require_owned("add engines")
        target = len(self.live_ids()) + n
        with self._lock:
            for _ in range(n):
                set_id = _on_cluster_loop(self.cluster.start_engines(n=1))
                for launcher in _launchers(self.cluster.engines[set_id]):
                    self._reaper.watch(_launcher_pid(launcher))
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
        self._require_owned("stop engines")
        self.refresh()
        info = self.engines.get(eid)
        if info is None or info.engine_set is None:
            raise ClusterError(f"engine {eid} is not one this process started")
        with self._lock:
            _on_cluster_loop(self.cluster.stop_engines(info.engine_set))

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
            self.autoscaler = Autoscaler(self, *limits)

    def _require_owned(self, what: str) -> None:
        if self.cluster is None:
            raise ClusterError(
                f"cannot {what}: this cluster was started elsewhere (pp_notebook.connect). "
                "Change its engines with the tool that started it, e.g. `ipcluster engines`.")

    def shutdown(self) -> None:
        """Stop a local cluster's engines and controller; disconnect from a foreign one."""
        try:
            self.client.close()
        except Exception:
            pass
        if self.cluster is not None:
            self.adapt(None)
            with self._lock:
                _quiet_stop(self.cluster)
                self._reaper.close()


def _launchers(engine_set: Any) -> list:
    return list(getattr(engine_set, "launchers", {}).values())


def _launcher_pid(launcher: Any) -> int | None:
    process = getattr(launcher, "process", None)
    return getattr(process, "pid", None)


# -- the kernel's one cluster -----------------------------------------------------------

_current: KernelCluster | None = None
_current_lock = threading.Lock()


def start(engines: int | str | None = None, *, min_engines: int = 1,
          max_engines: int | None = None, idle_timeout: float = 30.0) -> dict:
    """Start the kernel's local cluster with `engines` engines (default: the CPU count).

    `engines="auto"` starts `min_engines` and follows the work: an engine is added while
    items wait, every engine is busy and a core is free, up to `max_engines` (default: the
    CPU count); an engine idle for `idle_timeout` s leaves, down to `min_engines`.
    When a cluster is already running, a local one is scaled (or made adaptive) instead;
    the running cluster is reused either way. Returns `status()`.
    """
    global _current
    limits = _adaptive_limits(engines, min_engines, max_engines, idle_timeout)
    with _current_lock:
        n = limits[0] if limits else engines if engines is not None else (os.cpu_count() or 1)
        if n < 1:
            raise ValueError(f"engines must be at least 1, got {n}")
        if _current is not None and _current.controller_death() is not None:
            _current.shutdown()  # its controller died: start afresh
            _current = None
        if _current is None:
            _current = _start_local(n)
        elif limits is None and engines is not None and _current.owned \
                and len(_current.live_ids()) != n:
            _current.scale(n)
        if limits is not None:
            _current.adapt(limits)
    return status()


def _adaptive_limits(engines: int | str | None, min_engines: int, max_engines: int | None,
                     idle_timeout: float) -> tuple[int, int, float] | None:
    if engines != "auto":
        if isinstance(engines, str):
            raise ValueError(f"engines must be a number or 'auto', not {engines!r}")
        return None
    return min_engines, max_engines if max_engines is not None else (os.cpu_count() or 1), \
        idle_timeout


def _start_local(n: int) -> KernelCluster:
    # shutdown_atexit=False: ipyparallel's own exit hook (and __del__) would stop it on a
    # fresh loop, beside the cluster loop; `_stop_at_exit` and the Reaper stop it instead.
    cluster = ipp.Cluster(n=0, delay=0, controller_args=list(FAST_CONTROLLER_ARGS),
                          controller_ip="127.0.0.1", log_level=logging.ERROR,
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
_loop: IOLoop | None = None
_loop_lock = threading.Lock()


def _on_cluster_loop(coroutine: Any) -> Any:
    """Run an ipp.Cluster coroutine on the cluster loop; wait for and return its result."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = IOLoop(make_current=False)
            threading.Thread(target=_loop.start, name="pp_notebook-cluster-loop",
                             daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coroutine, _loop.asyncio_loop).result()


def connect(cluster_id: str = "", profile: str = "default", *, connection_file: str | None = None,
            timeout: float = 10.0) -> dict:
    """Use a cluster started elsewhere (`ipcluster start`, SSH/MPI/Slurm launchers, ...).

    Give its `cluster_id` and `profile`, or the path of its client connection file
    (`ipcontroller-client.json`). Replaces (and stops, if local) the current cluster.
    """
    global _current
    try:
        if connection_file is not None:
            client = ipp.Client(connection_file, timeout=timeout)
        else:
            client = ipp.Client(profile=profile, cluster_id=cluster_id, timeout=timeout)
    except (OSError, ipp.error.TimeoutError) as exc:
        where = connection_file or f"profile {profile!r}, cluster_id {cluster_id!r}"
        raise ClusterError(
            f"no cluster reachable for {where}: {str(exc).splitlines()[0]} Start one with "
            f"`ipcluster start -n 4{' --cluster-id=' + cluster_id if cluster_id else ''}` "
            "or call pp_notebook.start() for a local one.") from None
    with _current_lock:
        if _current is not None:
            _current.shutdown()
        _current = KernelCluster(client, cluster_id=cluster_id or Path(connection_file or "").stem)
        _current.wait_for_info()
    return status()


def stop() -> None:
    """Stop the kernel's cluster (engines and controller) if this process started it."""
    global _current
    with _current_lock:
        if _current is not None:
            handle, _current = _current, None
            handle.shutdown()


def current(start_if_missing: bool = True) -> KernelCluster:
    """The kernel's cluster, started with default settings on first use (or when the one
    this process started has lost its controller)."""
    if _current is None or _current.controller_death() is not None:
        if not start_if_missing:
            raise ClusterError("no cluster is running: call pp_notebook.start() or connect()")
        start()
    return _current


def scale(engines: int | str, *, min_engines: int = 1, max_engines: int | None = None,
          idle_timeout: float = 30.0) -> dict:
    """Grow or shrink the local cluster to `engines` engines, or make it follow the work
    with `engines="auto"` (see `start`)."""
    limits = _adaptive_limits(engines, min_engines, max_engines, idle_timeout)
    if limits is not None:
        current().adapt(limits)
        return status()
    if engines < 1:
        raise ValueError(f"engines must be at least 1, got {engines}")
    current().scale(engines)
    return status()


def status() -> dict:
    """The cluster's id and its live engines (id, host, pid, state), or `running: False`."""
    handle = _current
    if handle is None:
        return {"running": False, "cluster_id": None, "engines": []}
    infos = handle.refresh()
    try:
        queues = handle.client.queue_status()
    except Exception:
        queues = {}
    engines = []
    for eid in sorted(set(infos) - handle.retiring):
        info, queue = infos[eid], queues.get(eid, {})
        busy = queue.get("queue", 0) + queue.get("tasks", 0) > 0
        engines.append({"id": eid, "host": info.host, "pid": info.pid,
                        "state": "busy" if busy else "idle"})
    adaptive = handle.autoscaler.settings() if handle.autoscaler is not None else None
    return {"running": True, "cluster_id": handle.cluster_id, "local": handle.owned,
            "engines": engines, "adaptive": adaptive}


def _stop_at_exit() -> None:
    try:
        stop()
    except Exception:
        pass


atexit.register(_stop_at_exit)
