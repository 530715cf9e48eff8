"""The kernel's one ipyparallel cluster: start or connect on first use, scale, stop, status.

`handle.py` holds the connected cluster itself, `launchers.py` the ways to start engines
(local, slurm, mpi, ssh), `transport.py` where the controller listens, `autoscale.py` the
adaptive engine count and `reaper.py` the watcher that ends a killed kernel's cluster.

This package's own import is light (ipyparallel, pandas and the rest are imported when a
cluster is started or joined): the reaper runs as `python -m pp_notebook.cluster.reaper`
beside a starting cluster, and importing them there took 0.4 s of CPU from its start-up.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClusterError

if TYPE_CHECKING:
    from .handle import KernelCluster

__all__ = ["ClusterError", "connect", "current", "current_or_none", "scale", "start", "status",
           "stop", "swap"]

# -- the kernel's one cluster -----------------------------------------------------------

_current: KernelCluster | None = None
_current_lock = threading.Lock()


def start(engines: int | str | None = None, *, launcher: str | None = None,
          controller_ip: str | None = None, encrypt: bool | None = None,
          register_timeout: float | None = None, min_engines: int = 1,
          max_engines: int | None = None, idle_timeout: float = 30.0,
          **launcher_options: Any) -> dict:
    """Start the kernel's cluster with `engines` engines (default: the CPU count).

    `launcher` starts the engines: "local" (the default), "slurm" (one job per engine;
    options `partition`, `time`, `account`, `qos`), "mpi" (`mpi_args`) or "ssh" (`hosts`).
    Engines elsewhere reach the controller at `controller_ip` (an IP, host name or interface;
    default: this host's name), CurveZMQ-encrypted unless `encrypt=False`; a local cluster
    listens on loopback. An engine not registered within `register_timeout` s (a job still
    pending) is given up (default 120 s): cancelled and listed in `status()["not_granted"]`.

    `engines="auto"` starts `min_engines` and follows the work: engines are added while
    items wait and every engine is busy (locally: while a core is free; with a scheduler: a
    job per waiting item), up to `max_engines` (default: the CPU count); an engine idle for
    `idle_timeout` s leaves (its job is cancelled), down to `min_engines`.
    When a cluster is already running, it is scaled (or made adaptive) instead and reused.
    Returns `status()`.
    """
    global _current
    from .handle import REGISTER_TIMEOUT_S, start_cluster
    from .launchers import launcher_for

    chosen = launcher_for(launcher or "local", launcher_options)
    limits: tuple[int, int, float] | None = None
    if isinstance(engines, str):
        limits = _adaptive_limits(engines, min_engines, max_engines, idle_timeout)
        n = limits[0]
    else:
        n = engines if engines is not None else (os.cpu_count() or 1)
    with _current_lock:
        if n < 1:
            raise ValueError(f"engines must be at least 1, got {n}")
        if _current is not None and _current.controller_death() is not None:
            _current.shutdown()  # its controller died: start afresh
            _current = None
        if _current is not None and launcher is not None and _current.launcher is not chosen:
            raise ClusterError(f"a {_current.launcher.name} cluster is running: stop it "
                               f"(pp_notebook.stop()) before starting a {launcher} one")
        if _current is None:
            _current = start_cluster(n, chosen, launcher_options, controller_ip=controller_ip,
                                     encrypt=encrypt, register_timeout=REGISTER_TIMEOUT_S
                                     if register_timeout is None else register_timeout,
                                     most_engines=limits[1] if limits is not None else n)
        elif limits is None and engines is not None and _current.owned \
                and len(_current.live_ids()) != n:
            _current.scale(n)
        if limits is not None:
            _current.adapt(limits)
    return status()


def _adaptive_limits(engines: str, min_engines: int, max_engines: int | None,
                     idle_timeout: float) -> tuple[int, int, float]:
    """The limits of `engines="auto"`; any other text is refused."""
    if engines != "auto":
        raise ValueError(f"engines must be a number or 'auto', not {engines!r}")
    return min_engines, max_engines if max_engines is not None else (os.cpu_count() or 1), \
        idle_timeout


def connect(cluster_id: str = "", profile: str = "default", *, connection_file: str | None = None,
            timeout: float = 10.0) -> dict:
    """Use a cluster started elsewhere (`ipcluster start`, SSH/MPI/Slurm launchers, ...).

    Give its `cluster_id` and `profile`, or the path of its client connection file
    (`ipcontroller-client.json`). Replaces (and stops, if local) the current cluster.
    """
    global _current
    import ipyparallel as ipp

    from .handle import KernelCluster

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


def current_or_none() -> KernelCluster | None:
    """The kernel's cluster if one is running (never starts one)."""
    return _current


def swap(handle: KernelCluster | None) -> KernelCluster | None:
    """Make `handle` the kernel's cluster and return the one it replaces, still running (to
    work with another cluster for a while and come back)."""
    global _current
    with _current_lock:
        previous, _current = _current, handle
    return previous


def current(start_if_missing: bool = True) -> KernelCluster:
    """The kernel's cluster, started with default settings on first use (or when the one
    this process started has lost its controller; a connected one that lost it is refused,
    not silently replaced by a local one)."""
    death = _current.controller_death() if _current is not None else None
    if death is not None and _current is not None and not _current.owned:
        raise ClusterError(f"{death}: pp_notebook.connect() to it once it is back, or "
                           "pp_notebook.start() a local cluster")
    if _current is None or death is not None:
        if not start_if_missing:
            raise ClusterError("no cluster is running: call pp_notebook.start() or connect()")
        start()
    if _current is None:  # stopped by another thread as it started
        raise ClusterError("no cluster is running: call pp_notebook.start() or connect()")
    return _current


def scale(engines: int | str, *, min_engines: int = 1, max_engines: int | None = None,
          idle_timeout: float = 30.0) -> dict:
    """Grow or shrink the local cluster to `engines` engines, or make it follow the work
    with `engines="auto"` (see `start`)."""
    if isinstance(engines, str):
        limits = _adaptive_limits(engines, min_engines, max_engines, idle_timeout)
        current().adapt(limits)
        return status()
    if engines < 1:
        raise ValueError(f"engines must be at least 1, got {engines}")
    current().scale(engines)
    return status()


def status() -> dict:
    """The cluster's id, launcher and live engines (id, host, pid, state, scheduler job),
    the engines given up on (`not_granted`), or `running: False` (with `lost`: what became
    of the controller of the cluster still set)."""
    handle = _current
    if handle is None:
        return {"running": False, "cluster_id": None, "engines": []}
    death = handle.controller_death()
    if death is not None:  # the queue query below would wait for its answer forever
        return {"running": False, "cluster_id": handle.cluster_id, "local": handle.owned,
                "engines": [], "lost": death}
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
                        "state": "busy" if busy else "idle", "job": info.job})
    adaptive = handle.autoscaler.settings() if handle.autoscaler is not None else None
    return {"running": True, "cluster_id": handle.cluster_id, "local": handle.owned,
            "launcher": handle.launcher.name if handle.owned else None,
            "engines": engines, "adaptive": adaptive, "waiting": handle.waiting(),
            "not_granted": [vars(one) for one in handle.not_granted]}


def _stop_at_exit() -> None:
    try:
        stop()
    except Exception:
        pass


atexit.register(_stop_at_exit)
