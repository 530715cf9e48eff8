"""Helpers of the fault suite that run on the client only (tasks stay in the test modules:
the engines cannot import this package)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from pp_notebook.cluster.handle import KernelCluster, start_cluster

from helpers import process_tree

POLL_S = 0.01


def time_until(predicate, timeout: float) -> float | None:
    """Seconds until `predicate()` held (polled every POLL_S), or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(POLL_S)
    return None


def read_marker(path: Path, timeout: float = 30.0) -> tuple[float, int]:
    """(epoch time, pid) a faulting task wrote just before its fault."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the faulting task never wrote {path}"
        time.sleep(POLL_S)
    stamp, pid = path.read_text().split()
    return float(stamp), int(pid)


def engine_dead(run, *, eid: int | None = None, pid: int | None = None) -> bool:
    """Whether the run has noticed the death of the engine with this id or pid."""
    return any(e.state == "dead" and (e.id == eid or (pid is not None and e.pid == pid))
               for e in run.snapshot().engines)


def wrong_results(records, expected: dict) -> int:
    """How many of the records whose task is in `expected` lack that exact result."""
    return sum(r.status != "ok" or r.value != expected[r.task]
               for r in records if r.task in expected)


def cluster_processes(handle: KernelCluster) -> list[psutil.Process]:
    """The controller, its schedulers, the engines and their nannies of a local cluster."""
    handle.wait_for_info()
    processes = process_tree(handle.controller_pid)
    for info in handle.engines.values():
        if info.pid is not None:
            processes += process_tree(info.pid)
    return processes


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (psutil checks the pid was not reused), zombies excepted."""
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(process)
        except psutil.Error:
            pass
    return left


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL exactly these processes (a test's own), if they are still the same ones."""
    for process in alive(processes):
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=5)


@contextmanager
def dedicated_cluster(engines: int = 2):
    """A local cluster of its own, for faults that damage the cluster itself (the kernel's
    cluster stays untouched). Every process it started ends when the block does, whatever
    happened inside; `handle.leftovers` lists those that outlived `shutdown()`."""
    handle = start_cluster(engines)
    processes = cluster_processes(handle)
    handle.started_processes = processes
    handle.leftovers = []
    try:
        yield handle
    finally:
        try:
            handle.shutdown()
        finally:
            psutil.wait_procs(alive(processes), timeout=10)
            handle.leftovers = alive(processes)
            kill_all(handle.leftovers)


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6
